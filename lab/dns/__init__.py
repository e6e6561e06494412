"""The cluster DNS (CoreDNS's role): Kubernetes names answered from the lab API's objects.

- `records`: the zone: Services, headless Services' pods, pods by dashed IP (pure).
- `server`: the process (`python -m lab.dns.server`): watch the API, answer over UDP and TCP.
"""
