"""JWT for EDC integrations. Issuing a token is a login: it goes into the access audit log."""

from django.contrib.auth import get_user_model
from rest_framework_simplejwt.views import TokenObtainPairView

from studies.signals import log_access_event


class AuditedTokenObtainPairView(TokenObtainPairView):
    """POST username and password -> access and refresh tokens. A wrong password answers 401 and
    is logged as a failed login by Django's authenticate()."""

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        if response.status_code == 200:
            user = get_user_model().objects.get(username=request.data.get("username"))
            log_access_event(user, "login_api_token", request)
        return response
