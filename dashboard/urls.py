from django.urls import path

from dashboard.views import builder, calls, grants, servers, tool_rule, tools

app_name = "dashboard"
urlpatterns = [
    path("", servers.server_list, name="home"),
    path("servers/new/", servers.server_new, name="server_new"),
    path("servers/<slug:slug>/", servers.server_detail, name="server"),
    path("servers/<slug:slug>/edit/", servers.server_edit, name="server_edit"),
    path("servers/<slug:slug>/enabled/", servers.server_toggle, name="server_toggle"),
    path("servers/<slug:slug>/refresh/", servers.server_refresh, name="server_refresh"),
    path("servers/<slug:slug>/tools/", tools.catalogue, name="catalogue"),
    path("servers/<slug:slug>/tools/<path:name>/override/", tools.tool_override, name="tool_override"),
    path("servers/<slug:slug>/tools/<path:name>/approve/", tools.tool_approve, name="tool_approve"),
    path("servers/<slug:slug>/tools/<path:name>/", tools.tool_detail, name="tool"),
    path("servers/<slug:slug>/policy/", builder.builder, name="builder"),
    path("servers/<slug:slug>/policy/action/", builder.set_action, name="builder_action"),
    path("servers/<slug:slug>/policy/default/", builder.set_default, name="builder_default"),
    path("servers/<slug:slug>/policy/risk/", builder.set_risk, name="builder_risk"),
    path("servers/<slug:slug>/policy/select/", builder.select, name="builder_select"),
    path("servers/<slug:slug>/policy/bulk/", builder.bulk, name="builder_bulk"),
    path("servers/<slug:slug>/policy/preview/", builder.preview, name="builder_preview"),
    path("servers/<slug:slug>/policy/save/", builder.save, name="builder_save"),
    path("servers/<slug:slug>/policy/discard/", builder.discard, name="builder_discard"),
    path("servers/<slug:slug>/policy/import/", builder.import_policy, name="builder_import"),
    path("servers/<slug:slug>/policy/export/", builder.export, name="builder_export"),
    path("servers/<slug:slug>/policy/versions/", builder.versions, name="versions"),
    path("servers/<slug:slug>/policy/versions/<int:number>/rollback/", builder.rollback, name="rollback"),
    path("servers/<slug:slug>/policy/tools/<path:name>/", tool_rule.tool_rule, name="tool_rule"),
    path("grants/", grants.grant_list, name="grants"),
    path("grants/new/", grants.grant_new, name="grant_new"),
    path("grants/<slug:name>/", grants.grant_detail, name="grant"),
    path("grants/<slug:name>/revoke/", grants.grant_revoke, name="grant_revoke"),
    path("calls/", calls.call_list, name="calls"),
    path("calls/<int:pk>/", calls.call_detail, name="call"),
]
