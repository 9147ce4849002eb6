from pathlib import Path

import pytest
import torch

import trickscope
from trickscope import AgentConfig


@pytest.mark.parametrize("text", ["1", "true", "YES", " yes "])
def test_boolean_variables_accept_true_spellings(text: str) -> None:
    assert AgentConfig.from_env({"TRICKSCOPE_DISABLED": text}).disabled is True


@pytest.mark.parametrize("text", ["0", "false", "No"])
def test_boolean_variables_accept_false_spellings(text: str) -> None:
    assert AgentConfig.from_env({"TRICKSCOPE_DISABLED": text}).disabled is False


@pytest.mark.parametrize("text", ["on", "2", "enabled"])
def test_invalid_boolean_names_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match="TRICKSCOPE_OFFLINE"):
        AgentConfig.from_env({"TRICKSCOPE_OFFLINE": text})


def test_invalid_number_and_url_name_the_variable() -> None:
    with pytest.raises(ValueError, match="TRICKSCOPE_FLUSH_SECS='soon'"):
        AgentConfig.from_env({"TRICKSCOPE_FLUSH_SECS": "soon"})
    with pytest.raises(ValueError, match="TRICKSCOPE_URL"):
        AgentConfig.from_env({"TRICKSCOPE_URL": "localhost:8000"})


def test_keyword_overrides_beat_the_environment(tmp_path: Path) -> None:
    env = {"TRICKSCOPE_URL": "http://env:1", "TRICKSCOPE_JOURNAL_DIR": str(tmp_path)}
    assert AgentConfig.from_env(env).url == "http://env:1"
    assert AgentConfig.from_env(env).journal_dir == tmp_path
    assert AgentConfig.from_env(env, url="http://kw:2/").url == "http://kw:2"
    assert AgentConfig.from_env({}).url == "http://127.0.0.1:8000"


def test_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="flush_sec"):
        AgentConfig.from_env({}, flush_sec=1.0)


def test_disabled_run_does_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRICKSCOPE_DISABLED", "1")
    monkeypatch.setenv("TRICKSCOPE_JOURNAL_DIR", str(tmp_path))
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with trickscope.init(project="p", url="http://127.0.0.1:9") as run:
        assert run.sender is None
        run.watch(model, optimizer, every=1)
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        run.log({"loss": torch.tensor(1.0)})
    assert run.incidents.errors == 0
    assert list(tmp_path.iterdir()) == []
    assert optimizer._optimizer_step_pre_hooks == {}  # no hooks left behind


def test_disabled_run_still_checks_setup_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRICKSCOPE_DISABLED", "yes")
    run = trickscope.init(project="p")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        run.watch("not a model", None)  # type: ignore[arg-type]


def test_compress_is_automatic_unless_set() -> None:
    assert AgentConfig.from_env({}).compress is None
    assert AgentConfig.from_env({"TRICKSCOPE_COMPRESS": "1"}).compress is True
    assert AgentConfig.from_env({"TRICKSCOPE_COMPRESS": "no"}, compress=True).compress is True
    with pytest.raises(TypeError, match="compress='yes'"):
        AgentConfig(compress="yes")  # type: ignore[arg-type]


def test_scratch_bytes_comes_from_the_environment_or_defaults_to_32_mib() -> None:
    import torch

    from trickscope.config import DEFAULT_SCRATCH_BYTES, scratch_bytes

    cpu = torch.device("cpu")
    assert scratch_bytes(cpu, {}) == DEFAULT_SCRATCH_BYTES == 32 * 2**20
    assert scratch_bytes(cpu, {"TRICKSCOPE_SCRATCH_BYTES": "4096"}) == 4096
    for bad in ("0", "-1", "lots"):
        with pytest.raises(ValueError, match="TRICKSCOPE_SCRATCH_BYTES"):
            scratch_bytes(cpu, {"TRICKSCOPE_SCRATCH_BYTES": bad})


def test_watch_refuses_a_bad_scratch_size_when_it_is_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from trickscope._incidents import Incidents
    from trickscope.watch import Watcher

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monkeypatch.setenv("TRICKSCOPE_SCRATCH_BYTES", "-5")
    with pytest.raises(ValueError, match="TRICKSCOPE_SCRATCH_BYTES"):
        Watcher(model, optimizer, every=1, start_step=0, emit=print, incidents=Incidents())
