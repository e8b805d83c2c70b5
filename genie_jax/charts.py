"""Small charts drawn with Pillow (no plotting library): a bar chart, a labelled count matrix, a signed-change map.

All return uint8 RGB images (H, W, 3) for ``media.save_png``. Text uses Pillow's built-in bitmap font (Latin-1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_FONT = None
INK, GRID, BAR = (20, 20, 20), (200, 200, 200), (60, 110, 190)


def _font():
    global _FONT
    if _FONT is None:
        _FONT = ImageFont.load_default_imagefont()  # the bitmap font: crisp at small sizes, no FreeType needed
    return _FONT


def _text_width(draw: ImageDraw.ImageDraw, text: str) -> int:
    return int(draw.textlength(text, font=_font()))


def bar_chart(values: Sequence[float], labels: Sequence[str], title: str, *, bar_width: int = 44,
              height: int = 160) -> np.ndarray:
    """Vertical bars of ``values`` (fractions in [0, 1]) with the value above and the label below each bar."""
    margin, top, bottom = 12, 30, 30
    title_width = _text_width(ImageDraw.Draw(Image.new("RGB", (1, 1))), title)
    width = 2 * margin + max(bar_width * len(values), title_width)
    image = Image.new("RGB", (width, top + height + bottom), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 6), title, fill=INK, font=_font())
    base = top + height
    draw.line([(margin, base), (margin + bar_width * len(values), base)], fill=INK)
    for i, (value, label) in enumerate(zip(values, labels)):
        x0 = margin + i * bar_width + 6
        x1 = x0 + bar_width - 12
        y0 = base - round(float(np.clip(value, 0, 1)) * (height - 14))
        draw.rectangle([x0, y0, x1, base], fill=BAR)
        text = f"{value:.2f}"
        draw.text(((x0 + x1 - _text_width(draw, text)) // 2, y0 - 12), text, fill=INK, font=_font())
        label = str(label)
        draw.text(((x0 + x1 - _text_width(draw, label)) // 2, base + 6), label, fill=INK, font=_font())
    return np.asarray(image)


def count_matrix(table_RC: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], title: str, *,
                 row_title: str, col_title: str, cell: int = 34) -> np.ndarray:
    """A counts table as shaded cells (shade = share of the row) with the count written in each cell."""
    table_RC = np.asarray(table_RC)
    rows, cols = table_RC.shape
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max([_text_width(probe, str(s)) for s in row_labels] + [_text_width(probe, row_title)]) + 12
    col_w = max([cell] + [_text_width(probe, str(s)) + 8 for s in col_labels])
    top = 44
    image = Image.new("RGB", (left + cols * col_w + 12, top + rows * cell + 12), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=INK, font=_font())
    draw.text((left, 18), col_title, fill=INK, font=_font())
    draw.text((6, top - 12), row_title, fill=INK, font=_font())
    share = table_RC / np.maximum(table_RC.sum(axis=1, keepdims=True), 1)
    for j, label in enumerate(col_labels):
        draw.text((left + j * col_w + (col_w - _text_width(draw, str(label))) // 2, top - 12), str(label),
                  fill=INK, font=_font())
    for i, label in enumerate(row_labels):
        y = top + i * cell
        draw.text((6, y + cell // 2 - 5), str(label), fill=INK, font=_font())
        for j in range(cols):
            x = left + j * col_w
            shade = int(255 - 190 * share[i, j])
            draw.rectangle([x, y, x + col_w - 1, y + cell - 1], fill=(shade, shade, 255), outline=GRID)
            text = str(int(table_RC[i, j]))
            ink = "white" if share[i, j] > 0.6 else INK
            draw.text((x + (col_w - _text_width(draw, text)) // 2, y + cell // 2 - 5), text, fill=ink, font=_font())
    return np.asarray(image)


def signed_change(change_HW: np.ndarray, limit: float) -> np.ndarray:
    """Signed values as colour: white = no change, red = brighter, blue = darker, saturated at +-limit."""
    x = np.clip(np.asarray(change_HW, np.float64) / max(limit, 1e-9), -1.0, 1.0)
    pos, neg = np.clip(x, 0, 1), np.clip(-x, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)
