"""`ordermail render` works offline on an event file and the PDF is locked unless asked not to be."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from schemas.samples import sample_order


def _event_file(tmp_path: Path) -> Path:
    order = sample_order(4, lines=3)
    event = {**order, "occurred_at": int(order["occurred_at"].timestamp() * 1000)}  # as on the wire
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event, ensure_ascii=False))
    return path


def test_render_writes_an_encrypted_pdf_and_a_plain_one_on_request(tmp_path: Path) -> None:
    event = _event_file(tmp_path)
    locked, plain = tmp_path / "locked.pdf", tmp_path / "plain.pdf"
    ordermail = [sys.executable, "-m", "consumer.app.cli", "render", str(event)]
    subprocess.run([*ordermail, "--out", str(locked)], check=True, capture_output=True)
    subprocess.run([*ordermail, "--out", str(plain), "--no-encrypt"], check=True, capture_output=True)
    assert (
        subprocess.run(["qpdf", "--check", str(locked)], capture_output=True).returncode != 0
    )  # needs a password
    assert subprocess.run(["qpdf", "--check", str(plain)], capture_output=True).returncode == 0
    text = subprocess.run(["pdftotext", str(plain), "-"], capture_output=True, text=True, check=True).stdout
    assert sample_order(4, lines=3)["order_id"] in text


def test_render_refuses_an_invalid_event(tmp_path: Path) -> None:
    event = json.loads(_event_file(tmp_path).read_text())
    event["lines"] = []
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(event))
    result = subprocess.run(
        [sys.executable, "-m", "consumer.app.cli", "render", str(path), "--out", str(tmp_path / "x.pdf")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == "ordermail render: the event would be REJECTED: no_lines\n"
    assert not (tmp_path / "x.pdf").exists()


def test_the_template_check_s_shares_are_put_back_in_serial_order() -> None:
    from consumer.app.cli import _in_serial_order

    everything = [f"rendering {n}" for n in range(11)]
    for shares in (1, 2, 3, 4):
        assert _in_serial_order([everything[i::shares] for i in range(shares)]) == everything
    assert _in_serial_order([[["a"], []], [["b"]]]) == [["a"], ["b"], []]
