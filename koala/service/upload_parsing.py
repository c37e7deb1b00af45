"""An upload's body as it streams in, kept in memory: the raw request body is the image, or a
multipart/form-data body is parsed here (python-multipart's streaming parser) and its ``file`` field kept.

Starlette's own form parser would spool files over 1 MiB to a temporary file; nothing from an upload may reach
the disk.
"""

from __future__ import annotations

from koala.service.problems import Problem

MULTIPART_FIELD = "file"


class RawSink:
    """The request body is the image."""

    def __init__(self):
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def finish(self) -> tuple[bytes, str | None]:
        return bytes(self.data), None


class MultipartSink:
    """Parse multipart/form-data in memory as it streams in; keep only the first ``file`` field."""

    def __init__(self, boundary: bytes):
        from python_multipart.multipart import MultipartParser

        self.data: bytearray | None = None
        self.filename: str | None = None
        self._keeping = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        })

    def _part_begin(self) -> None:
        self._headers = {}
        self._keeping = False

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == MULTIPART_FIELD and self.data is None:
            self._keeping = True
            self.data = bytearray()
            filename = options.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._keeping:
            self.data.extend(data[start:end])

    def _part_end(self) -> None:
        self._keeping = False

    def write(self, chunk: bytes) -> None:
        from python_multipart.exceptions import MultipartParseError

        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise Problem(400, "The multipart form data is malformed.") from None

    def finish(self) -> tuple[bytes, str | None]:
        from python_multipart.exceptions import MultipartParseError

        try:
            self._parser.finalize()
        except MultipartParseError:
            raise Problem(400, "The multipart form data is malformed or incomplete.") from None
        if self.data is None:
            raise Problem(400, f"The form has no '{MULTIPART_FIELD}' field: send the photo as '{MULTIPART_FIELD}'.")
        return bytes(self.data), self.filename


def sink_for(content_type: str):
    from python_multipart.multipart import parse_options_header

    media_type, options = parse_options_header(content_type)
    if media_type == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise Problem(400, "The multipart request has no boundary.")
        return MultipartSink(boundary)
    return RawSink()
