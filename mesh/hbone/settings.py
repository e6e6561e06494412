"""ztunnel's HTTP/2 settings for HBONE, and a tuned h2 connection that applies them.

ztunnel sizes HTTP/2 for bulk tunnels rather than for web pages: 1 MiB frames, a 4 MiB
stream window and a 16 MiB connection window, so one tunnel can fill a fast link
(docs/ambient-facts.md §1.6; ztunnel `src/config.rs`, `src/proxy/h2/{client,server}.rs`).

h2 needs two nudges to really run with these numbers:

- the initial *connection* window is not a SETTINGS value (RFC 9113 §6.9.2): it is opened
  with a WINDOW_UPDATE on stream 0 right after the preface (`start_connection`);
- a larger MAX_FRAME_SIZE in `local_settings` does not raise the limit h2 enforces on
  inbound frames, so `max_inbound_frame_size` is set as well.

The connection itself is `tuned_h2.HboneH2Connection`: h2 without its per-byte copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import h2.config
import h2.connection
import h2.settings
from h2.settings import SettingCodes

from .tuned_h2 import HboneH2Connection

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Http2Settings:
    """One side's HTTP/2 parameters for HBONE."""

    max_frame_size: int = 1 * MiB
    stream_window: int = 4 * MiB
    connection_window: int = 16 * MiB
    max_header_list_size: int = 16 * KiB
    #: Advertised to the peer. A client also opens at most min(this, the peer's value)
    #: streams on one connection before its pool opens another connection.
    max_concurrent_streams: int = 100
    #: Bytes handed to the connection but not yet written before `send_all` waits.
    max_send_buffer: int = 4 * MiB
    #: HTTP/2 PING keepalive: first PING after `keepalive_interval` seconds, then every
    #: interval; no PONG within `keepalive_timeout` drops the connection. None disables.
    keepalive_interval: float | None = 10.0
    keepalive_timeout: float = 20.0


#: The outbound pool's side (ztunnel `h2/client.rs`): push disabled, 100 streams per connection.
CLIENT_SETTINGS = Http2Settings(max_header_list_size=16 * KiB, max_concurrent_streams=100, max_send_buffer=4 * MiB)

#: The inbound 15008 side (ztunnel `h2/server.rs`): 200 streams advertised, hyper's 400 KiB send buffer.
SERVER_SETTINGS = Http2Settings(max_header_list_size=64 * KiB, max_concurrent_streams=200, max_send_buffer=400 * KiB)

# The window every connection starts with before any WINDOW_UPDATE (RFC 9113 §6.9.2).
_DEFAULT_CONNECTION_WINDOW = 65_535


def new_h2_connection(settings: Http2Settings, *, client_side: bool) -> HboneH2Connection:
    """A fresh h2 connection carrying `settings`; call `start_connection` before use.

    Headers stay bytes (`header_encoding=None`): a peer cannot make decoding fail inside
    h2, and `mesh.hbone.headers` decides how to read them.
    """
    config = h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        # What we send is built by `mesh.hbone.headers` (lowercase names, no connection-specific
        # fields), so h2's re-checking of it is skipped; what the peer sends is still validated.
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = HboneH2Connection(config)
    apply_settings(conn, settings)
    return conn


def apply_settings(conn: h2.connection.H2Connection, settings: Http2Settings) -> None:
    """Install `settings` as the connection's local settings; only valid before the preface.

    Replacing `local_settings` before `initiate_connection` makes the values current at
    once (the peer sees them in our first SETTINGS frame, before any stream), instead of
    pending until the peer acknowledges a later SETTINGS frame.
    """
    client_side = conn.config.client_side
    values = {
        SettingCodes.MAX_FRAME_SIZE: settings.max_frame_size,
        SettingCodes.INITIAL_WINDOW_SIZE: settings.stream_window,
        SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
        SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
    }
    if client_side:
        values[SettingCodes.ENABLE_PUSH] = 0
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values=values)
    conn.max_inbound_frame_size = settings.max_frame_size
    conn.decoder.max_header_list_size = settings.max_header_list_size


def start_connection(conn: h2.connection.H2Connection, settings: Http2Settings) -> None:
    """Queue the preface and SETTINGS, then open the connection window to its full size."""
    conn.initiate_connection()
    extra = settings.connection_window - _DEFAULT_CONNECTION_WINDOW
    if extra > 0:
        conn.increment_flow_control_window(extra)
