"""Shows bytes that may or may not be text: UTF-8 text when they decode (and print), a hex
dump otherwise. Owns that choice only."""

from __future__ import annotations

#: A dump longer than this is cut (a dead letter can hold a large payload).
MAX_DUMP_BYTES = 4096


def text_or_none(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c in "\n\r\t" for c in text) else None


def hex_dump(data: bytes, *, width: int = 16) -> str:
    """Offset, hex and printable ASCII per line, like `hexdump -C`."""
    shown = data[:MAX_DUMP_BYTES]
    lines = []
    for start in range(0, len(shown), width):
        chunk = shown[start : start + width]
        hex_part = " ".join(f"{b:02x}" for b in chunk)
        ascii_part = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:08x}  {hex_part:<{width * 3 - 1}}  |{ascii_part}|")
    if len(data) > len(shown):
        lines.append(f"... {len(data) - len(shown)} more bytes")
    return "\n".join(lines) if lines else "(empty)"


def preview(data: bytes, limit: int = 80) -> str:
    """One short line: the text (cut at limit) or "N bytes"."""
    text = text_or_none(data)
    if text is None:
        return f"<{len(data)} bytes>"
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
