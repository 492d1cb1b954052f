"""Ctrl-C in any command: exit status 130 and one line naming the command, no traceback."""

import importlib

cli = importlib.import_module("mlguard.cli.main")  # the module, not the main() it exports


def test_ctrl_c_in_any_command_exits_130_with_a_message(monkeypatch, capsys):
    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_info", interrupted)
    assert cli.main(["info"]) == 130
    err = capsys.readouterr().err
    assert "mlguard info: interrupted" in err and "Traceback" not in err
