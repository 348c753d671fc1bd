"""``python -m dpo_lib trigger``: a --conf it cannot read is refused with exit status 2, before Airflow is asked."""

import pytest

from dpo_lib.cli import main


@pytest.mark.parametrize("conf", ["/no/such/file.json", "{not json", "[1, 2]"])
def test_an_unreadable_conf_exits_2_naming_it(conf, capsys, monkeypatch):
    from dpo_lib.api import client

    monkeypatch.setattr(client.AirflowAPI, "login", lambda *a, **k: pytest.fail("Airflow was asked"))
    assert main(["trigger", "--conf", conf]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --conf") and "Traceback" not in err


def test_a_binary_file_is_refused_too(tmp_path, capsys):
    path = tmp_path / "conf.bin"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert main(["trigger", "--conf", str(path)]) == 2
    assert "neither JSON nor a readable file" in capsys.readouterr().err
