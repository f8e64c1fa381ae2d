from django.contrib.auth import views as auth_views
from django.urls import include, path

from gateway.telemetry.scrape import metrics

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="registration/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("metrics", metrics, name="metrics"),
    path("", include("dashboard.urls")),
]
