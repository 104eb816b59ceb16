"""Downloads for the apply stage: NVIDIA manifests and archives over HTTPS, checked before use.

Every request has a connect and a read timeout and is retried with backoff on connection
errors and 5xx answers (requests with urllib3's `Retry`). An archive is streamed to
`<name>.part` beside its final place, never more than its pinned size; its sha256 is computed on
the way and compared before it is renamed into place, so nothing unverified is ever left under
the final name. A download cut short is kept as `.part` and resumed with a range request next
time. Only https is fetched, except from the loopback address (a local mirror, the tests'
server). Errors are `ApplyError`s of one line naming the URL.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from resolver.errors import ApplyError

if TYPE_CHECKING:
    from pathlib import Path

    import requests

    from resolver.recipes.redist import Archive

__all__ = ["Fetcher", "mirrored"]

_CHUNK = 1 << 20


def _allowed(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http" or parts.hostname is None:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def mirrored(url: str, mirror: str | None) -> str:
    """`url` from `mirror` instead of its origin: `https://host/a/b` -> `<mirror>/a/b`.

    Air-gapped machines keep NVIDIA's redist tree on a local server; the recipe's pins (size,
    sha256) still decide what is accepted.
    """
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


@dataclass(slots=True)
class Fetcher:
    """An HTTP session with timeouts (seconds) and retries."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    _session: requests.Session | None = None

    def _get(self, url: str, headers: dict[str, str] | None = None) -> requests.Response:
        import requests  # noqa: PLC0415 - only apply downloads
        from requests.adapters import HTTPAdapter  # noqa: PLC0415
        from urllib3.util.retry import Retry  # noqa: PLC0415

        if not _allowed(url):
            raise ApplyError(f"{url}: refusing a download that is not https")
        if self._session is None:
            session = requests.Session()
            retry = Retry(total=self.retries, backoff_factor=0.5,
                          status_forcelist=(500, 502, 503, 504), allowed_methods=("GET",))
            for prefix in ("http://", "https://"):
                session.mount(prefix, HTTPAdapter(max_retries=retry))
            self._session = session
        try:
            response = self._session.get(url, stream=True, headers=headers,
                                         timeout=(self.connect_timeout, self.read_timeout))
            response.raise_for_status()
        except requests.RequestException as err:
            raise ApplyError(f"{url}: download failed: {_reason(err)}") from None
        return response

    def fetch_bytes(self, url: str, limit: int) -> bytes:
        """The body at `url`, at most `limit` bytes.

        Raises:
            ApplyError: the download failed or is larger than `limit`.

        """
        import requests  # noqa: PLC0415

        with self._get(url) as response:
            data = bytearray()
            try:
                for chunk in response.iter_content(_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise ApplyError(f"{url}: larger than {limit} bytes")
            except requests.RequestException as err:
                raise ApplyError(f"{url}: download failed: {_reason(err)}") from None
        return bytes(data)

    def download(self, archive: Archive, folder: Path) -> Path:
        """`archive` saved in `folder` under its file name, its size and sha256 checked.

        Raises:
            ApplyError: the download failed, or the bytes are not the pinned ones (the partial
                file is removed).

        """
        import requests  # noqa: PLC0415

        final = folder / os.path.basename(archive.relative_path)
        partial = final.with_name(final.name + ".part")
        digest, size = hashlib.sha256(), 0
        # A download a failure cut short is resumed (an HTTP range request); its bytes are
        # hashed again, and the whole is checked at the end as if it came in one piece.
        have = partial.stat().st_size if partial.is_file() else 0
        if 0 < have < archive.size:
            with partial.open("rb") as kept:
                while chunk := kept.read(_CHUNK):
                    digest.update(chunk)
            size = have
        else:
            partial.unlink(missing_ok=True)
        try:
            headers = {"Range": f"bytes={size}-"} if size else None
            with self._get(archive.url, headers) as response:
                if size and response.status_code != 206:
                    digest, size = hashlib.sha256(), 0  # the server sends it all again
                with partial.open("ab" if size else "wb") as out:
                    for chunk in response.iter_content(_CHUNK):
                        size += len(chunk)
                        _check_size(archive, size)
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
        except requests.RequestException as err:
            # Kept as .part (never under the final name): the next try resumes it.
            raise ApplyError(f"{archive.url}: download failed: {_reason(err)}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if size != archive.size or digest.hexdigest() != archive.sha256:
            partial.unlink(missing_ok=True)
            raise ApplyError(f"{archive.url}: got {size} bytes with sha256 {digest.hexdigest()},"
                             f" expected {archive.size} bytes with sha256 {archive.sha256}")
        partial.replace(final)
        return final


def _check_size(archive: Archive, size: int) -> None:
    if size > archive.size:
        raise ApplyError(f"{archive.url}: larger than the {archive.size} bytes the manifest says")


def _reason(err: Exception) -> str:
    """A one-line reason for a requests error (its chain can be many lines)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:300]
