"""JWT for EDC integrations. Issuing a token is a login: it goes into the access audit log."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.views import TokenObtainPairView

from config.api import ApiView
from studies.signals import log_access_event


class AuditedTokenObtainPairView(ApiView, TokenObtainPairView):
    """POST username and password -> access and refresh tokens. A wrong password answers 401 and
    is logged as a failed login by Django's authenticate()."""

    @extend_schema(examples=[OpenApiExample(
        "An integration account", request_only=True,
        value={"username": "edc.integration", "password": "from-your-secret-store"})])
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError as error:
            raise InvalidToken(error.args[0]) from error
        # The authenticated user from the serializer, not a second lookup by the raw user name.
        log_access_event(serializer.user, "login_api_token", request)
        return Response(serializer.validated_data, status=status.HTTP_200_OK)


class TokenRefreshView(ApiView, jwt_views.TokenRefreshView):
    """POST a refresh token -> a new access token."""
