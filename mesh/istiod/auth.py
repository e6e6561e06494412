"""Who is calling: istiod authenticates every request on 15012 by its ServiceAccount token.

Kubernetes' TokenReview's role is played by the lab API op `token_review` (audience `istio-ca`).
The reason a token is refused goes to istiod's log; the caller only learns CLIENT_MESSAGE.
"""

from __future__ import annotations

from lab.client import AsyncLabClient, LabError
from lab.client.protocol import ProtocolError
from mesh.identity.caller import CA_AUDIENCE, Caller

CLIENT_MESSAGE = "request authenticate failure"  # istiod's gRPC Unauthenticated message


class Unauthenticated(Exception):
    """The token names no one; `reason` is for the log."""

    client_message = CLIENT_MESSAGE

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TokenReviewer:
    """Reviews tokens through the lab API (one call per request, as istiod without a cache)."""

    def __init__(self, client: AsyncLabClient, audience: str = CA_AUDIENCE):
        self._client = client
        self._audience = audience

    async def review(self, token: object) -> Caller:
        if not isinstance(token, str) or not token:
            raise Unauthenticated("no token in the request")
        try:
            result = await self._client.call("token_review", token=token, audience=self._audience)
        except LabError as e:
            raise Unauthenticated(str(e)) from None
        except (OSError, ProtocolError) as e:
            raise Unauthenticated(f"the lab API cannot review tokens now: {e}") from None
        user = (result or {}).get("user") or {}
        if not (result or {}).get("authenticated") or not all(
            user.get(k) for k in ("namespace", "serviceAccount", "podName", "podUID")
        ):
            raise Unauthenticated(f"token review did not authenticate the token: {result!r}")
        return Caller(
            pod_name=user["podName"],
            pod_uid=user["podUID"],
            namespace=user["namespace"],
            service_account=user["serviceAccount"],
            node=user.get("nodeName"),
        )
