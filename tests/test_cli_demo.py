"""demo.png's labels: words stay apart."""
from __future__ import annotations

import numpy as np
import torch

from ganinv.cli.demo import _labelled_sheet


def _label_gaps(label: str) -> list[int]:
    """Widths of the blank column runs between the inked columns of a row label on demo.png's sheet."""
    scale, size = 8, 16
    sheet = np.asarray(_labelled_sheet([[torch.ones(3, size, size)]], ["target"], [label], scale).convert("L"))
    y = 18 + size * scale + 1  # the label line under the row's images
    inked = (sheet[y:y + 12] < 128).any(axis=0)
    columns = np.flatnonzero(inked)
    assert len(columns), "the label was not drawn"
    gaps, run = [], 0
    for ink in inked[columns[0]:columns[-1] + 1]:
        if ink:
            if run:
                gaps.append(run)
            run = 0
        else:
            run += 1
    return gaps


def test_row_labels_keep_visible_word_gaps():
    spaced, joined = _label_gaps("held-out sample"), _label_gaps("held-outsample")
    # The space must read as a space: clearly wider than any gap between two letters of a word.
    assert max(spaced) >= 4 and max(spaced) >= 2 * max(joined), (spaced, joined)
    assert max(_label_gaps("photo: my photo")) >= 4
