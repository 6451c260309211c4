"""`niyama serve` as TGI's launcher, at the parser: variables, TGI's flags, one-line refusals, hub download.

No server starts here (tests/test_vertex_cors_docs.py starts one from the
environment alone); the hub is never reached (snapshot_download is faked).
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from niyama.router import serve
from niyama.router.launcher_flags import ANY, INAPPLICABLE, LaunchError, env_name, env_names
from niyama.router.serve import arguments, parser
from niyama.worker import loading
from niyama.worker.loading import ModelLoadError, hub_snapshot

# Every flag of TGI 3.3's launcher (launcher/src/main.rs, `struct Args`), as TGI spells it.
TGI_LAUNCHER_FLAGS = """model_id revision validation_workers sharded num_shard quantize speculate dtype kv_cache_dtype
trust_remote_code max_concurrent_requests max_best_of max_stop_sequences max_top_n_tokens max_input_tokens
max_input_length max_total_tokens waiting_served_ratio max_batch_prefill_tokens max_batch_total_tokens
max_waiting_tokens max_batch_size cuda_graphs hostname port prometheus_port shard_uds_path master_addr master_port
huggingface_hub_cache weights_cache_override disable_custom_kernels cuda_memory_fraction rope_scaling rope_factor
json_output otlp_endpoint otlp_service_name cors_allow_origin api_key watermark_gamma watermark_delta ngrok
ngrok_authtoken ngrok_edge tokenizer_config_path disable_grammar_support env max_client_batch_size lora_adapters
usage_stats payload_limit enable_prefill_logprobs graceful_termination_timeout""".split()


def options() -> list[argparse.Action]:
    return [action for action in parser()._actions if action.option_strings and action.dest != "help"]


def given(action: argparse.Action) -> tuple[list[str], str]:
    """The same value as command-line words and as the variable's text."""
    flag = next(option for option in action.option_strings if option.startswith("--"))
    if isinstance(action, argparse.BooleanOptionalAction):
        return [f"--no-{flag.removeprefix('--')}"], "false"
    if action.nargs == 0:
        return [flag], "true"
    if action.choices:
        value = str(list(action.choices)[-1])
    else:
        value = {int: "7", float: "0.5"}.get(action.type, "10.0.0.7")
    return [flag, value], value


TGI_ONLY = {flag.flag for flag in INAPPLICABLE}


@pytest.mark.parametrize(
    "action", [a for a in options() if env_names(a) and a.option_strings[0] not in TGI_ONLY],
    ids=lambda a: a.option_strings[-1],
)  # fmt: skip
def test_every_option_reads_its_tgi_variable_as_the_flag(action):
    words, text = given(action)
    from_env = {name: vars(arguments([], {name: text})) for name in env_names(action)}
    assert all(namespace == vars(arguments(words, {})) for namespace in from_env.values())
    assert vars(arguments([], {})) != vars(arguments(words, {}))  # the value given is not the default


def test_every_option_has_its_variable_but_tgis_own_exceptions():
    assert [a.option_strings for a in options() if not env_names(a)] == [["--env"]]  # TGI reads --env from none
    assert env_name("--max-input-tokens") == "MAX_INPUT_TOKENS" and env_name("--model-id") == "MODEL_ID"


def test_every_tgi_launcher_flag_is_known():
    known = {option for action in options() for option in action.option_strings}
    assert [flag for flag in TGI_LAUNCHER_FLAGS if "--" + flag.replace("_", "-") not in known] == []


def test_the_flag_wins_over_its_variable_and_tgi_names_map_onto_ours():
    env = {"PORT": "9000", "MAX_BATCH_SIZE": "8", "MAX_BATCH_TOTAL_TOKENS": "5000", "GRACEFUL_TERMINATION_TIMEOUT": "3",
           "MAX_INPUT_LENGTH": "100", "LOG_LEVEL": "warn", "CORS_ALLOW_ORIGIN": "https://a.example, https://b.example"}
    args = arguments(["--port", "9001"], env)
    assert (args.port, args.max_running, args.kv_tokens, args.grace_period, args.max_input_tokens) == (
        9001, 8, 5000, 3.0, 100)  # fmt: skip
    assert args.log_level == "warning" and args.cors_allow_origin == ["https://a.example", "https://b.example"]
    assert serve.cors_origins(["https://a.example,https://b.example", "https://c.example"]) == [
        "https://a.example", "https://b.example", "https://c.example"]  # fmt: skip
    assert arguments(["--max-running", "4"], env).max_running == 4


def test_unrelated_and_empty_variables_change_nothing():
    assert vars(arguments([], {"CI": "true", "ENV": "production", "PORT": "", "HOME": "/root"})) == vars(
        arguments([], {})
    )


def test_aip_http_port_wins_as_on_vertex():
    assert arguments(["--port", "9001"], {"AIP_HTTP_PORT": "8080", "PORT": "80"}).port == 8080


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT=eighty: not a valid int for --port"),
        ({"DTYPE": "int8"}, "DTYPE=int8: --dtype must be one of auto, float32, bfloat16, float16, float64"),
        ({"JSON_OUTPUT": "maybe"}, "JSON_OUTPUT=maybe: expected true or false"),
        ({"AIP_HTTP_PORT": "x"}, "AIP_HTTP_PORT=x: not a valid int"),
        ({"AIP_PREDICT_ROUTE": "predict"}, "AIP_PREDICT_ROUTE=predict: a route must start with /"),
        ({"KV_TOKENS": "1000", "MAX_BATCH_TOTAL_TOKENS": "2000"}, "KV_TOKENS and MAX_BATCH_TOTAL_TOKENS are set "
                                                                   "differently; set one of them"),
        ({"HOSTNAME": "no-such-host.invalid"}, "--hostname/HOSTNAME 'no-such-host.invalid' is neither an IP address "
                                               "nor a name that resolves"),
        ({"NUM_SHARD": "2"}, "NUM_SHARD=2: not available in Niyama: one model copy runs per replica: --replicas N "
                             "for copies, --gpus-per-replica N to spread one over N GPUs"),
    ],
)  # fmt: skip
def test_a_bad_variable_is_one_line_naming_it(env, message, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert serve.main([]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"niyama serve: {message}") and error.count("\n") == 1


def test_a_resolvable_hostname_is_accepted_as_docker_sets_it():
    assert arguments([], {"HOSTNAME": "localhost"}).hostname == "localhost"
    assert arguments([], {"HOSTNAME": socket.gethostname()}).hostname == socket.gethostname()
    assert arguments([], {"HOSTNAME": "0.0.0.0"}).hostname == "0.0.0.0"


REFUSED = [flag for flag in INAPPLICABLE if flag.accepted != ANY]


@pytest.mark.parametrize("flag", REFUSED, ids=lambda flag: flag.flag)
def test_each_inapplicable_tgi_flag_fails_in_one_line_saying_what_to_use(flag, monkeypatch, capsys):
    words = [flag.flag] if flag.switch else [flag.flag, "2.5"]
    assert serve.main(words) == 2
    error = capsys.readouterr().err
    assert error == f"niyama serve: {' '.join(words)}: not available in Niyama: {flag.instead}\n"
    if flag.env:
        with pytest.raises(LaunchError, match=f"^{env_name(flag.flag)}=(true|2.5): not available in Niyama: "):
            arguments([], {env_name(flag.flag): "true" if flag.switch else "2.5"})


@pytest.mark.parametrize(
    ("env", "instead"),
    [
        ("QUANTIZE", "--dtype"), ("SPECULATE", "no speculative decoding"), ("LORA_ADAPTERS", "adapter merged in"),
        ("PROMETHEUS_PORT", "/metrics is served on --port"), ("WAITING_SERVED_RATIO", "never paused"),
        ("MAX_WAITING_TOKENS", "by deadline"), ("KV_CACHE_DTYPE", "--dtype"), ("OTLP_ENDPOINT", "/metrics"),
    ],
)  # fmt: skip
def test_the_messages_name_niyamas_own_option(env, instead):
    with pytest.raises(LaunchError) as refused:
        arguments([], {env: "x"})
    assert instead in str(refused.value)


def test_values_that_ask_for_what_niyama_does_anyway_are_accepted():
    env = {"NUM_SHARD": "1", "SHARDED": "false", "CUDA_MEMORY_FRACTION": "1.0", "USAGE_STATS": "off",
           "DISABLE_GRAMMAR_SUPPORT": "false", "NGROK": "false", "DISABLE_CUSTOM_KERNELS": "true",
           "ENABLE_PREFILL_LOGPROBS": "true", "OTLP_SERVICE_NAME": "tgi",
           "VALIDATION_WORKERS": "1", "CUDA_GRAPHS": "0"}  # fmt: skip
    arguments([], env)
    arguments(["--num-shard", "1", "--sharded", "false", "--disable-custom-kernels", "--enable-prefill-logprobs"], {})


class FakeHub:
    """`snapshot_download` over a fake repository: nothing cached; a download writes the files its patterns take."""

    def __init__(self, root: Path, files: list[str]) -> None:
        self.root, self.files, self.calls = root, files, []

    def __call__(self, repo_id, *, revision=None, local_files_only=False, token=None, allow_patterns=None,
                 ignore_patterns=None, **_):  # fmt: skip
        from fnmatch import fnmatch

        from huggingface_hub.errors import LocalEntryNotFoundError

        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        self.calls.append({"revision": revision, "token": token, "allow": allow_patterns})
        folder = self.root / repo_id.replace("/", "--") / (revision or "main")
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.files:
            if any(fnmatch(name, p) for p in allow_patterns) and not any(fnmatch(name, p) for p in ignore_patterns):
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_text("x")
        return str(folder)


REPO = ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "pytorch_model.bin", "training_args.bin", "consolidated.safetensors", "onnx/model.onnx", "original/x.pth",
        "modeling_custom.py", "README.md"]  # fmt: skip


def test_a_hub_model_not_cached_is_downloaded_at_its_revision_with_hf_token(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path, REPO)
    monkeypatch.setattr("huggingface_hub.snapshot_download", hub)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    folder = hub_snapshot("org/model", "refs/pr/2")
    allow = [*loading.HUB_FILES, "*.safetensors"]
    assert hub.calls == [{"revision": "refs/pr/2", "token": "hf_secret", "allow": allow}]
    assert sorted(p.name for p in folder.iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
    ]  # only what transformers reads: no .bin twin, no Mistral copy, no subfolders, no code  # fmt: skip
    assert any(p.name == "modeling_custom.py" for p in hub_snapshot("org/model", "custom", True).iterdir())


def test_pytorch_weights_are_fetched_only_when_there_are_no_safetensors(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path, ["config.json", "tokenizer.json", "pytorch_model.bin", "training_args.bin"])
    monkeypatch.setattr("huggingface_hub.snapshot_download", hub)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_old_name")
    folder = hub_snapshot("org/old")
    assert [call["allow"][-1] for call in hub.calls] == ["*.safetensors", "pytorch_model*.bin"]
    assert hub.calls[0]["token"] == "hf_old_name" and hub.calls[0]["revision"] is None
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin", "tokenizer.json"]


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    import httpx
    from huggingface_hub.errors import RepositoryNotFoundError

    def missing(repo_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise FileNotFoundError(repo_id)
        answer = httpx.Response(404, request=httpx.Request("GET", "https://hub.invalid"))
        raise RepositoryNotFoundError("404 Client Error. Repository Not Found for url: ...\nmore", response=answer)

    monkeypatch.setattr("huggingface_hub.snapshot_download", missing)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with pytest.raises(ModelLoadError, match=r"^could not download model 'org/nope' at revision v2 from the Hugging "
                                             r"Face hub: 404 Client Error. Repository Not Found for url: \.\.\.$"):
        hub_snapshot("org/nope", "v2")  # fmt: skip


def test_offline_nothing_is_downloaded_and_the_refusal_says_where_it_looked(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path, REPO)
    monkeypatch.setattr("huggingface_hub.snapshot_download", hub)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match=f"'org/model' at revision v1 is neither a local path nor in the Hugging "
                                             f"Face cache at {tmp_path}/cache, and HF_HUB_OFFLINE is set"):
        hub_snapshot("org/model", "v1")  # fmt: skip
    assert hub.calls == []


def test_the_switching_from_tgi_table_matches_the_parser():
    text = (Path(__file__).parents[1] / "docs" / "serving.md").read_text()
    section = text[text.index("## Switching from TGI") :].split("\n## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `--")]
    actions = {option: action for action in options() for option in action.option_strings}
    refused = {flag.flag: flag for flag in INAPPLICABLE}
    assert sorted(row[0].strip("| `") for row in rows) == sorted("--" + f.replace("_", "-") for f in TGI_LAUNCHER_FLAGS)
    for flag, variable, meaning in ((row[0].strip("| `"), row[1].strip("`"), row[2]) for row in rows):
        assert variable == (env_name(flag) if env_names(actions[flag]) else "(none)"), flag
        assert (refused[flag].instead in meaning) if flag in refused else ("refused" not in meaning), flag


def test_max_total_tokens_must_fit_the_kv_cache_as_tgi_s_max_batch_total_tokens():
    """A request without a max may run to --max-total-tokens; one the cache cannot hold could never start."""
    args = parser().parse_args(["--max-total-tokens", "300"])
    with pytest.raises(ValueError, match=r"--max-total-tokens 300 exceeds the KV cache \(160 tokens\)"):
        serve.server_settings(args, "m", 1024, 160, "cpu")
    assert serve.server_settings(args, "m", 1024, 320, "cpu").max_total_tokens == 300
    assert serve.server_settings(parser().parse_args([]), "m", 1024, 160, "cpu").max_total_tokens == 160
