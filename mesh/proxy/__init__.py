"""The lab's L7 proxy engine: what runs in waypoint pods (and later as sidecars).

Map:
- `http`:   buffered request/response messages, local replies and the codec limits;
- `http1`:  HTTP/1.1 server loop and upstream client over one trio stream (h11);
- `http2`:  h2c (prior knowledge) server over one trio stream (h2);
- `codec`:  protocol sniffing (HTTP or not, HTTP/1 or HTTP/2) and `serve_http`.
"""
