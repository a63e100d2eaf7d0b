"""apprise's json:// and jsons:// notifications as the standard library sends them: the same method,
headers (requests' defaults first, in its order), body bytes and URL options as apprise's JSON plugin,
so a receiver cannot tell the host's send from the controller's. A URL with anything this cannot
reproduce exactly is not sendable here (the controller sends it). Python >= 3.7.
"""

import base64
import json
import re
from urllib.parse import unquote, urlencode, urlsplit

SEND_TIMEOUT_S = 10.0  # per connect, write and read
METHODS = ("POST", "PUT", "PATCH")
OPTION_KEY = re.compile(r"^[+:-]?[A-Za-z0-9_-]+$")
OPTION_VALUE = re.compile(r"^[A-Za-z0-9_.,/@!*~-]*$")
# What requests (under apprise) sends before the plugin's own headers, in its order.
REQUESTS_HEADERS = (("User-Agent", "Apprise"), ("Accept-Encoding", "gzip, deflate"), ("Accept", "*/*"),
                    ("Connection", "keep-alive"))  # fmt: skip


def request_of(url):
    """The HTTP request apprise's json:// (jsons://) plugin makes for url, as a dict; None for a URL
    this module does not make exactly as apprise does (the controller's apprise sends those)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("json", "jsons") or not rest:
        return None
    parts = urlsplit("http://" + rest)
    try:
        port = parts.port
    except ValueError:
        return None
    user, password = parts.username, parts.password
    if not parts.hostname or parts.fragment or (user is not None and password is None) or "%" in parts.path:
        return None  # a user without a password, or an escaped path: apprise's quirks there stay apprise's
    request = {"secure": scheme.lower() == "jsons", "host": parts.hostname, "port": port, "path": parts.path or "/",
               "method": "POST", "headers": [], "params": [], "extras": [], "verify": True,
               "auth": (unquote(user), unquote(password)) if user is not None else None}  # fmt: skip
    options = _query_options(parts.query)
    if options is None:
        return None
    for key, value in options:
        if not _take_option(request, key, value):
            return None
    return request


def _query_options(query):
    """The URL's ?key=value pairs where reading them is plain (no escapes, no '+' for a space, no ';',
    no key twice), so that apprise reads them alike; None otherwise."""
    if not query:
        return []
    pairs = [pair.partition("=")[::2] for pair in query.split("&")]
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys) or not all(
        OPTION_KEY.match(key) and OPTION_VALUE.match(value) for key, value in pairs
    ):
        return None
    return pairs


def _take_option(request, key, value):
    """One ?key=value of the URL into request; False for an option this module does not serve."""
    if key[:1] in ("+", "-", ":") and len(key) > 1:
        request[{"+": "headers", "-": "params", ":": "extras"}[key[0]]].append((key[1:], value))
    elif key == "method" and value.upper() in METHODS:
        request["method"] = value.upper()
    elif key == "verify" and value.lower() in ("yes", "no", "true", "false", "1", "0"):
        request["verify"] = value.lower() in ("yes", "true", "1")
    else:
        return False
    return True


def sendable(url):
    return request_of(url) is not None


def payload(title, body, extras=()):
    """The JSON body apprise's plugin posts, byte for byte: its fields, its order, its json.dumps."""
    document = {"version": "1.0", "title": title, "message": body, "attachments": [], "type": "info"}
    for key, value in extras:
        if key in document:
            moved = document.pop(key)
            if value:
                document[value] = moved  # renamed; an empty value drops the field
        else:
            document[key] = value
    return json.dumps(document).encode("utf-8")


def send(url, title, body, timeout=SEND_TIMEOUT_S):
    """One POST as apprise makes it. None when the receiver took it (2xx), else why not, without the URL."""
    request = request_of(url)
    if request is None:
        return "not a json:// URL this host can send"
    import http.client  # here: the controller reads this module's names on every `runner status`

    data = payload(title, body, request["extras"])
    path = request["path"] + ("?" + urlencode(request["params"]) if request["params"] else "")
    try:
        status = _post(request, path, data, timeout)
    except (OSError, http.client.HTTPException, ValueError) as error:
        return _scrub("%s: %s" % (type(error).__name__, getattr(error, "strerror", None) or error), url)
    return None if 200 <= status < 300 else "the receiver answered HTTP %d" % status


def _post(request, path, data, timeout):
    import http.client
    import ssl

    if request["secure"]:
        context = ssl.create_default_context()
        if not request["verify"]:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection(request["host"], request["port"], timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(request["host"], request["port"], timeout=timeout)
    try:
        connection.putrequest(request["method"], path, skip_accept_encoding=True)
        headers = dict(REQUESTS_HEADERS)
        headers.update([("Content-Type", "application/json")] + request["headers"])
        headers["Content-Length"] = str(len(data))
        if request["auth"]:
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % request["auth"]).encode()).decode()
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(data)
        answer = connection.getresponse()
        answer.read(64 * 1024)
        return answer.status
    finally:
        connection.close()


def _scrub(text, url):
    """text without url and without any long piece of it (a token, a password, a path)."""
    _, _, rest = url.partition("://")
    pieces = [url] + [piece for piece in re.split(r"[/:@?&=#,+]+", rest) if len(piece) >= 6]
    for piece in sorted(set(pieces), key=len, reverse=True):
        text = text.replace(piece, "***")
    return text[:300]
