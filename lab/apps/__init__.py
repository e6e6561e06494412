"""Apps the image catalog runs besides the real httpbin: `echo`, an echo server in the spirit of
Istio's test app."""
