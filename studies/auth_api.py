"""JWT for EDC integrations. Issuing a token is a login: it goes into the access audit log."""

from rest_framework import status
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.views import TokenObtainPairView

from studies.signals import log_access_event


class AuditedTokenObtainPairView(TokenObtainPairView):
    """POST username and password -> access and refresh tokens. A wrong password answers 401 and
    is logged as a failed login by Django's authenticate()."""

    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except TokenError as error:
            raise InvalidToken(error.args[0]) from error
        # The authenticated user from the serializer, not a second lookup by the raw user name.
        log_access_event(serializer.user, "login_api_token", request)
        return Response(serializer.validated_data, status=status.HTTP_200_OK)
