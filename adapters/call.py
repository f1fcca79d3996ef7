"""Send one signed request, the way an SDK client would: ``python adapters/call.py KEY.json METHOD URL [BODY]``.

``KEY.json`` is what ``authmw key create USER --format json`` printed (``access`` and ``secret``). Prints the
status and the response body.
"""

from __future__ import annotations

import json
import sys

import httpx

from authmw.client import HttpxAuth


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        key = json.load(handle)
    method, url = argv[1].upper(), argv[2]
    body = argv[3].encode() if len(argv) == 4 else b""
    headers = {"Content-Type": "application/json"} if body else {}
    response = httpx.request(method, url, content=body, headers=headers, auth=HttpxAuth(key["access"], key["secret"]))
    print(response.status_code, response.text)
    return 0 if response.is_success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
