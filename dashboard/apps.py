from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Portcullis dashboard"

    def ready(self):
        from dashboard import signals

        signals.connect()  # dashboard websockets end on logout, deactivation and deletion
