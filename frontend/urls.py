"""Dashboard pages. The control plane mounts these at the site root."""
from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from frontend import reproductions, views

app_name = "frontend"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="frontend:experiments"), name="home"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True,
                                     next_page="frontend:experiments"),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="frontend:login"),
         name="logout"),
    path("devices/", views.devices, name="devices"),
    path("experiments/", views.experiments, name="experiments"),
    path("experiments/new/", views.new_experiment, name="new-experiment"),
    path("experiments/<uuid:experiment_id>/", views.experiment, name="experiment"),
    path("compare/", views.compare, name="compare"),
    path("results/", views.results, name="results"),
    path("results/export.<str:fmt>", views.results_export, name="results-export"),
    path("reproductions/", reproductions.reproductions, name="reproductions"),
    path("reproductions/plots/<str:name>", reproductions.reproduction_plot,
         name="reproduction-plot"),
]
