"""The command's regularization flags, run as users run them."""

import numpy as np
from cli_helpers import assert_one_line_error, final_accuracy, run_cli

import portable_bp as pbp


def test_dropout_l2_clipping_and_the_new_optimizers_from_the_command_line(tmp_path):
    for optimizer in ("adamw", "rmsprop"):
        done = run_cli("train", "--dataset", "xor", "--hidden", "8", "8", "--dropout", "0.1", "0.2", "--l2", "1e-3",
                       "--clip-norm", "5", "--clip-value", "1", "--optimizer", optimizer, "--lr", "0.01",
                       "--epochs", "3", "--save", "m.npz", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"{optimizer} lr=0.01" in done.stdout
        assert "dropout 0.1/0.2, l2 0.001, clip-value 1, clip-norm 5" in done.stdout
        final_accuracy(done.stdout)
        net = pbp.load(tmp_path / "m.npz")
        assert net.dropout == (0.1, 0.2)
        assert type(net.optimizer_state[0]).__name__ == {"adamw": "AdamW", "rmsprop": "RMSprop"}[optimizer]


def test_adamw_gets_its_own_weight_decay_unless_told(tmp_path):
    done = run_cli("train", "--dataset", "xor", "--optimizer", "adamw", "--epochs", "1", "--save", "m.npz",
                   "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert pbp.load(tmp_path / "m.npz").optimizer_state[0].weight_decay == 0.01
    done = run_cli("train", "--dataset", "xor", "--optimizer", "adamw", "--weight-decay", "0", "--epochs", "1",
                   "--save", "m.npz", "--quiet", cwd=tmp_path)
    assert pbp.load(tmp_path / "m.npz").optimizer_state[0].weight_decay == 0.0
    assert np.isfinite(final_accuracy(done.stdout)[0])


def test_bad_regularization_flags_are_one_line_errors(tmp_path):
    for args, words in ((["--dropout", "1"], ("--dropout", "a rate in [0, 1)", "'1'")),
                        (["--dropout", "0.1", "0.2"], ("dropout", "one per hidden layer (1); got 2 rates")),
                        (["--l2", "-1"], ("--l2", "'-1'")),
                        (["--clip-norm", "nan"], ("--clip-norm", "'nan'")),
                        (["--clip-value", "0"], ("--clip-value", "'0'"))):
        assert_one_line_error(run_cli("train", "--dataset", "xor", *args, cwd=tmp_path), *words)
