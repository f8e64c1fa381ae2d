"""A JSON model field that keeps object key order on every database.

PostgreSQL's jsonb reorders keys (by length, then bytes). Policy documents must export in the order they were
written (export_policy prints exactly what apply_policy stored), and a tool's schema properties in the
upstream's order (the builder offers constraints in that order), so these are stored as JSON text.
"""

from __future__ import annotations

import json

from django.db import models


class OrderedJSONField(models.TextField):
    description = "JSON stored as text, key order kept"

    def from_db_value(self, value, expression, connection):
        return None if value is None else json.loads(value)

    def to_python(self, value):
        if value is None or not isinstance(value, str):
            return value
        return json.loads(value)

    def get_prep_value(self, value):
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def value_to_string(self, obj):
        return self.get_prep_value(self.value_from_object(obj))
