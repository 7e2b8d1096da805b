"""`xinf-watch init`: a starter rules.yaml and keys.yaml from the gateway and Xinference on this host.

One module per concern: `gateway.py` the shared result of reading a gateway's config, `nginx.py`,
`caddy.py` and `haproxy.py` one config language each, `auth.py` Xinference's key files and the
keys.yaml skeleton, `write.py` the files written, `command.py` what the command finds and prints.
"""
