"""The component manifest: defaults, and the exact one-line error for each rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.errors import ValidationError
from edge.model import (
    ComponentManifest,
    DynamoDBResults,
    Limits,
    Output,
    Results,
    S3Results,
    Trigger,
    load_component,
    parse_component,
)
from edge.model.durations import parse_duration, parse_size

SOURCE = "components/hello/component.yaml"
MINIMAL = """\
name: hello
version: 1.0.0
runtime: python3.11
handler: app.handler
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (the working directory) with ``components/hello/app.py``."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "components" / "hello"
    folder.mkdir(parents=True)
    (folder / "app.py").write_text("def handler(event, context):\n    return event\n")
    return tmp_path


def write(project: Path, text: str, name: str = "component.yaml") -> Path:
    path = project / "components" / "hello" / name
    path.write_text(textwrap.dedent(text))
    return path


def load(project: Path, text: str) -> ComponentManifest:
    write(project, text)
    return load_component("components/hello")


def error(project: Path, text: str) -> str:
    write(project, text)
    with pytest.raises(ValidationError) as info:
        load_component("components/hello")
    message = str(info.value)
    assert "\n" not in message
    return message


# -- the happy path ------------------------------------------------------------


def test_minimal_manifest_has_defaults(project: Path) -> None:
    manifest = load(project, MINIMAL)
    assert manifest.name == "hello"
    assert manifest.version == "1.0.0"
    assert manifest.runtime == "python3.11"
    assert manifest.language == "python"
    assert manifest.handler_module == "app"
    assert manifest.handler_function == "handler"
    assert manifest.triggers == ()
    assert manifest.outputs == ()
    assert manifest.results == Results(s3=None, dynamodb=None)
    assert manifest.limits == Limits(
        timeout=3.0,
        memory_mb=128,
        max_instances=100,
        max_queue=1000,
        pinned=True,
        idle_timeout=60.0,
        queue_full="reject",
    )
    assert dict(manifest.environment) == {}
    assert manifest.errors_topic == "edge/{thing}/{component}/errors"
    assert manifest.description == ""
    assert manifest.source == SOURCE
    assert manifest.path == project / "components" / "hello"
    assert manifest.path.is_absolute()


def test_full_manifest(project: Path) -> None:
    manifest = load(
        project,
        """\
        name: com.example.Thumbnailer
        version: 1.2.3-rc.1+build.5
        description: Makes thumbnails
        runtime: python3.12
        handler: app.handler
        triggers:
          - topic: cameras/+/frames
            encoding: binary
          - topic: cameras/{thing}/#
        outputs:
          - topic: thumbnails/{thing}/ready
        results:
          s3: {bucket: thumbs.example-1, prefix: "{thing}/{date}/{hour}/"}
          dynamodb: {table: thumbnails, partition_key: id, sort_key: at}
        limits:
          timeout: 500ms
          memory_mb: 256
          max_instances: 2
          max_queue: 10
          pinned: false
          idle_timeout: 2m
          queue_full: drop-oldest
        environment:
          LOG_LEVEL: debug
          EMPTY: ""
        errors:
          topic: alerts/{component}
        """,
    )
    assert manifest.name == "com.example.Thumbnailer"
    assert manifest.version == "1.2.3-rc.1+build.5"
    assert manifest.description == "Makes thumbnails"
    assert manifest.triggers == (
        Trigger(topic="cameras/+/frames", encoding="binary"),
        Trigger(topic="cameras/{thing}/#", encoding="json"),
    )
    assert manifest.outputs == (Output(topic="thumbnails/{thing}/ready"),)
    assert manifest.results == Results(
        s3=S3Results(bucket="thumbs.example-1", prefix="{thing}/{date}/{hour}/"),
        dynamodb=DynamoDBResults(table="thumbnails", partition_key="id", sort_key="at"),
    )
    assert manifest.limits == Limits(
        timeout=0.5,
        memory_mb=256,
        max_instances=2,
        max_queue=10,
        pinned=False,
        idle_timeout=120.0,
        queue_full="drop-oldest",
    )
    assert dict(manifest.environment) == {"LOG_LEVEL": "debug", "EMPTY": ""}
    assert manifest.errors_topic == "alerts/{component}"


def test_result_defaults(project: Path) -> None:
    manifest = load(
        project, MINIMAL + "results:\n  s3: {bucket: thumbs}\n  dynamodb: {table: things}\n"
    )
    assert manifest.results.s3 == S3Results(bucket="thumbs", prefix="{component}/{thing}/")
    assert manifest.results.dynamodb == DynamoDBResults(
        table="things", partition_key="pk", sort_key="sk"
    )


def test_environment_is_read_only(project: Path) -> None:
    manifest = load(project, MINIMAL + "environment: {A: b}\n")
    with pytest.raises(TypeError):
        manifest.environment["A"] = "c"  # type: ignore[index]


def test_yml_suffix_and_path_objects(project: Path) -> None:
    write(project, MINIMAL, name="component.yml")
    manifest = load_component(project / "components" / "hello")
    assert manifest.source == str(project / "components" / "hello" / "component.yml")


def test_next_patch_version(project: Path) -> None:
    assert load(project, MINIMAL.replace("1.0.0", "NEXT_PATCH")).version == "NEXT_PATCH"


def test_dotted_python_module(project: Path) -> None:
    package = project / "components" / "hello" / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("def run(e, c): pass\n")
    manifest = load(project, MINIMAL.replace("app.handler", "pkg.mod.run"))
    assert manifest.handler_module == "pkg.mod"
    assert manifest.handler_function == "run"
    assert load(project, MINIMAL.replace("app.handler", "pkg.main")).handler_module == "pkg"


@pytest.mark.parametrize("suffix", [".js", ".mjs", ".cjs"])
def test_nodejs_handler(project: Path, suffix: str) -> None:
    (project / "components" / "hello" / f"index{suffix}").write_text("")
    manifest = load(project, MINIMAL.replace("python3.11", "nodejs20.x").replace("app.", "index."))
    assert manifest.language == "nodejs"
    assert manifest.handler_module == "index"


def test_nodejs_handler_in_subfolder(project: Path) -> None:
    (project / "components" / "hello" / "src").mkdir()
    (project / "components" / "hello" / "src" / "main.js").write_text("")
    manifest = load(
        project, MINIMAL.replace("python3.11", "nodejs22.x").replace("app.", "src/main.")
    )
    assert manifest.handler_module == "src/main"


def test_parse_component_directly(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("")
    data = {"name": "x", "version": "0.0.1", "runtime": "python3.13", "handler": "app.handler"}
    manifest = parse_component(data, source="inline", folder=tmp_path)
    assert manifest.source == "inline"
    assert manifest.path == tmp_path.resolve()


def test_null_optional_keys_count_as_absent(project: Path) -> None:
    manifest = load(project, MINIMAL + "triggers:\noutputs:\nenvironment:\ndescription:\n")
    assert manifest.triggers == ()
    assert manifest.description == ""


# -- files and YAML ------------------------------------------------------------


def test_missing_manifest(project: Path) -> None:
    with pytest.raises(ValidationError) as info:
        load_component("components/hello")
    assert str(info.value) == "components/hello/component.yaml: file not found"


def test_missing_folder(project: Path) -> None:
    with pytest.raises(ValidationError) as info:
        load_component("components/nope")
    assert str(info.value) == "components/nope: no such component folder"


def test_both_suffixes(project: Path) -> None:
    write(project, MINIMAL)
    write(project, MINIMAL, name="component.yml")
    with pytest.raises(ValidationError) as info:
        load_component("components/hello")
    assert str(info.value) == (
        "components/hello: both component.yaml and component.yml exist; keep one"
    )


def test_yaml_syntax_error_names_file_and_line(project: Path) -> None:
    assert error(project, "name: hello\nversion: [1.0.0\nruntime: x\n").startswith(
        f"{SOURCE}: line 3, column 8: invalid YAML: "
    )


def test_duplicate_key(project: Path) -> None:
    assert error(project, MINIMAL + "name: again\n") == (
        f"{SOURCE}: line 5, column 1: invalid YAML: duplicate key 'name'"
    )


def test_empty_file(project: Path) -> None:
    assert error(project, "") == (
        f"{SOURCE}: the document must be a mapping of keys to values, got nothing"
    )


def test_top_level_not_a_mapping(project: Path) -> None:
    assert error(project, "- a\n- b\n") == (
        f"{SOURCE}: the document must be a mapping of keys to values, got list ['a', 'b']"
    )


# -- unknown keys --------------------------------------------------------------


def test_unknown_key_with_suggestion(project: Path) -> None:
    assert error(project, MINIMAL + "trigers: []\n") == (
        f"{SOURCE}: trigers: unknown key; did you mean 'triggers'?"
    )


def test_unknown_key_without_suggestion(project: Path) -> None:
    assert error(project, MINIMAL + "zzz: 1\n") == (
        f"{SOURCE}: zzz: unknown key (expected one of: description, environment, errors, "
        "handler, health, limits, name, outputs, results, runtime, triggers, version)"
    )


def test_unknown_nested_keys(project: Path) -> None:
    assert error(project, MINIMAL + "limits: {timout: 3s}\n") == (
        f"{SOURCE}: limits.timout: unknown key; did you mean 'timeout'?"
    )
    assert error(project, MINIMAL + "triggers:\n  - {topic: a, encodng: json}\n") == (
        f"{SOURCE}: triggers[0].encodng: unknown key; did you mean 'encoding'?"
    )
    assert error(project, MINIMAL + "results: {s3: {bukket: b}}\n") == (
        f"{SOURCE}: results.s3.bukket: unknown key; did you mean 'bucket'?"
    )


def test_non_string_key(project: Path) -> None:
    assert error(project, MINIMAL + "1: x\n") == f"{SOURCE}: key 1 is not a string"


# -- top-level fields ----------------------------------------------------------


@pytest.mark.parametrize("key", ["name", "version", "runtime", "handler"])
def test_required_keys(project: Path, key: str) -> None:
    text = "".join(line + "\n" for line in MINIMAL.splitlines() if not line.startswith(key))
    assert error(project, text) == f"{SOURCE}: {key}: required key is missing"


def test_empty_required_key(project: Path) -> None:
    assert error(project, MINIMAL.replace("hello", "''")) == f"{SOURCE}: name: may not be empty"
    assert error(project, MINIMAL.replace("name: hello", "name:")) == (
        f"{SOURCE}: name: may not be empty"
    )


def test_bad_name(project: Path) -> None:
    assert error(project, MINIMAL.replace("hello", "'my component'")) == (
        f"{SOURCE}: name: 'my component' is not a component name "
        "(up to 128 letters, digits, '-', '_', '.')"
    )


def test_name_not_a_string(project: Path) -> None:
    assert error(project, MINIMAL.replace("hello", "42")) == f"{SOURCE}: name: 42 is not a string"


@pytest.mark.parametrize("version", ["1.0", "'1.0'", "v1.0.0", "01.0.0", "1.0.0-", "next_patch"])
def test_bad_version(project: Path, version: str) -> None:
    shown = {"1.0": "1.0", "'1.0'": "'1.0'"}.get(version, repr(version))
    assert error(project, MINIMAL.replace("1.0.0", version)) == (
        f"{SOURCE}: version: {shown} is not a semantic version (MAJOR.MINOR.PATCH) or NEXT_PATCH"
    )


def test_unknown_runtime_suggests(project: Path) -> None:
    assert error(project, MINIMAL.replace("python3.11", "python3.10")) == (
        f"{SOURCE}: runtime: 'python3.10' is not a supported runtime; did you mean 'python3.11'? "
        "(supported: python3.11, python3.12, python3.13, nodejs18.x, nodejs20.x, nodejs22.x)"
    )


def test_malformed_handler(project: Path) -> None:
    assert error(project, MINIMAL.replace("app.handler", "handler")) == (
        f"{SOURCE}: handler: 'handler' is not module.function "
        "(e.g. app.handler or pkg.module.handler)"
    )
    assert error(project, MINIMAL.replace("app.handler", "../app.handler")) == (
        f"{SOURCE}: handler: '../app.handler' is not module.function "
        "(e.g. app.handler or pkg.module.handler)"
    )


def test_handler_module_missing_names_the_file(project: Path) -> None:
    folder = project / "components" / "hello"
    assert error(project, MINIMAL.replace("app.handler", "main.handler")) == (
        f"{SOURCE}: handler: 'main.handler' needs main.py or main/__init__.py in {folder}, "
        "and none exists"
    )


def test_nodejs_handler_missing(project: Path) -> None:
    folder = project / "components" / "hello"
    assert error(project, MINIMAL.replace("python3.11", "nodejs18.x")) == (
        f"{SOURCE}: handler: 'app.handler' needs app.js or app.mjs or app.cjs in {folder}, "
        "and none exists"
    )


def test_description_must_be_a_string(project: Path) -> None:
    assert error(project, MINIMAL + "description: [a]\n") == (
        f"{SOURCE}: description: ['a'] is not a string"
    )


# -- topics --------------------------------------------------------------------


def test_triggers_must_be_a_list(project: Path) -> None:
    assert error(project, MINIMAL + "triggers: a/b\n") == f"{SOURCE}: triggers: 'a/b' is not a list"


def test_trigger_must_be_a_mapping(project: Path) -> None:
    assert error(project, MINIMAL + "triggers: [a/b]\n") == (
        f"{SOURCE}: triggers[0]: the value must be a mapping of keys to values, got str 'a/b'"
    )


def test_trigger_topic_required(project: Path) -> None:
    assert error(project, MINIMAL + "triggers:\n  - encoding: json\n") == (
        f"{SOURCE}: triggers[0].topic: required key is missing"
    )


def test_trigger_topic_invalid_filter(project: Path) -> None:
    assert error(project, MINIMAL + "triggers:\n  - topic: a/#/b\n") == (
        f"{SOURCE}: triggers[0].topic: 'a/#/b': '#' must be the last level"
    )
    assert error(project, MINIMAL + "triggers:\n  - topic: a/b+\n") == (
        f"{SOURCE}: triggers[0].topic: 'a/b+': '+' must be alone in its level"
    )


def test_duplicate_trigger(project: Path) -> None:
    assert error(project, MINIMAL + "triggers:\n  - topic: a\n  - topic: a\n") == (
        f"{SOURCE}: triggers[1].topic: 'a' is already a trigger"
    )


def test_trigger_encoding(project: Path) -> None:
    assert error(project, MINIMAL + "triggers:\n  - {topic: a, encoding: binry}\n") == (
        f"{SOURCE}: triggers[0].encoding: 'binry' is not one of json, binary; "
        "did you mean 'binary'?"
    )


def test_output_may_not_use_wildcards(project: Path) -> None:
    assert error(project, MINIMAL + "outputs:\n  - topic: a/+\n") == (
        f"{SOURCE}: outputs[0].topic: 'a/+' may not contain MQTT wildcards (+ or #); "
        "only triggers may"
    )


def test_errors_topic_may_not_use_wildcards(project: Path) -> None:
    assert error(project, MINIMAL + "errors: {topic: 'x/#'}\n") == (
        f"{SOURCE}: errors.topic: 'x/#' may not contain MQTT wildcards (+ or #); only triggers may"
    )


def test_errors_section_without_topic_keeps_default(project: Path) -> None:
    manifest = load(project, MINIMAL + "errors: {}\n")
    assert manifest.errors_topic == "edge/{thing}/{component}/errors"


def test_unknown_topic_placeholder(project: Path) -> None:
    assert error(project, MINIMAL + "outputs:\n  - topic: 'x/{device}'\n") == (
        f"{SOURCE}: outputs[0].topic: 'x/{{device}}': unknown placeholder {{device}} "
        "(allowed: {component}, {thing})"
    )
    assert error(project, MINIMAL + "triggers:\n  - topic: 'x/{date}'\n") == (
        f"{SOURCE}: triggers[0].topic: 'x/{{date}}': unknown placeholder {{date}} "
        "(allowed: {component}, {thing})"
    )


def test_unbalanced_brace(project: Path) -> None:
    assert error(project, MINIMAL + "outputs:\n  - topic: 'x/{thing'\n") == (
        f"{SOURCE}: outputs[0].topic: 'x/{{thing': unbalanced '{{' or '}}' "
        "(placeholders look like {thing})"
    )


def test_duplicate_output(project: Path) -> None:
    assert error(project, MINIMAL + "outputs:\n  - topic: a\n  - topic: a\n") == (
        f"{SOURCE}: outputs[1].topic: 'a' is listed twice"
    )


# -- results -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bucket", ["ab", "Thumbs", "-thumbs", "thumbs-", "a..b", "10.0.0.1", "a_b"]
)
def test_bad_bucket(project: Path, bucket: str) -> None:
    assert error(project, MINIMAL + f"results: {{s3: {{bucket: '{bucket}'}}}}\n") == (
        f"{SOURCE}: results.s3.bucket: {bucket!r} is not an S3 bucket name "
        "(3-63 lowercase letters, digits, '.', '-'; starting and ending with a letter or digit)"
    )


def test_bucket_of_63_characters(project: Path) -> None:
    assert load(project, MINIMAL + f"results: {{s3: {{bucket: {'a' * 63}}}}}\n").results.s3
    assert "is not an S3 bucket name" in error(
        project, MINIMAL + f"results: {{s3: {{bucket: {'a' * 64}}}}}\n"
    )


def test_bucket_required(project: Path) -> None:
    assert error(project, MINIMAL + "results: {s3: {prefix: x/}}\n") == (
        f"{SOURCE}: results.s3.bucket: required key is missing"
    )


def test_unknown_prefix_placeholder(project: Path) -> None:
    assert error(project, MINIMAL + "results: {s3: {bucket: abc, prefix: '{day}/'}}\n") == (
        f"{SOURCE}: results.s3.prefix: '{{day}}/': unknown placeholder {{day}} "
        "(allowed: {component}, {date}, {hour}, {thing})"
    )


@pytest.mark.parametrize("table", ["ab", "a b", "tab/le"])
def test_bad_table(project: Path, table: str) -> None:
    assert error(project, MINIMAL + f"results: {{dynamodb: {{table: '{table}'}}}}\n") == (
        f"{SOURCE}: results.dynamodb.table: {table!r} is not a DynamoDB table name "
        "(3-255 letters, digits, '_', '.', '-')"
    )


def test_table_too_long(project: Path) -> None:
    assert load(project, MINIMAL + f"results: {{dynamodb: {{table: {'t' * 255}}}}}\n")
    message = error(project, MINIMAL + f"results: {{dynamodb: {{table: {'t' * 256}}}}}\n")
    assert message.startswith(f"{SOURCE}: results.dynamodb.table: 'ttt")
    assert message.endswith(
        "... is not a DynamoDB table name (3-255 letters, digits, '_', '.', '-')"
    )


def test_same_partition_and_sort_key(project: Path) -> None:
    text = MINIMAL + "results: {dynamodb: {table: abc, partition_key: id, sort_key: id}}\n"
    assert error(project, text) == (
        f"{SOURCE}: results.dynamodb.sort_key: 'id' is also the partition_key"
    )


# -- limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timeout: 0", "limits.timeout: 0 must be greater than zero"),
        ("timeout: -1s", "limits.timeout: '-1s' is negative"),
        ("timeout: soon", "limits.timeout: 'soon' is not a duration (e.g. 3, 1.5s, 500ms, 2m, 1h)"),
        (
            "idle_timeout: 3d",
            "limits.idle_timeout: '3d' is not a duration (e.g. 3, 1.5s, 500ms, 2m, 1h)",
        ),
        ("memory_mb: 0", "limits.memory_mb: 0 is not a positive integer"),
        ("memory_mb: 1.5", "limits.memory_mb: 1.5 is not a positive integer"),
        ("max_instances: true", "limits.max_instances: True is not a positive integer"),
        ("max_queue: '10'", "limits.max_queue: '10' is not a positive integer"),
        ("pinned: 'yes'", "limits.pinned: 'yes' is not true or false"),
        (
            "queue_full: drop_oldest",
            "limits.queue_full: 'drop_oldest' is not one of reject, drop-oldest; "
            "did you mean 'drop-oldest'?",
        ),
    ],
)
def test_bad_limits(project: Path, text: str, expected: str) -> None:
    assert error(project, MINIMAL + f"limits: {{{text}}}\n") == f"{SOURCE}: {expected}"


def test_limits_numbers_are_seconds(project: Path) -> None:
    limits = load(project, MINIMAL + "limits: {timeout: 10, idle_timeout: 1.5}\n").limits
    assert (limits.timeout, limits.idle_timeout) == (10.0, 1.5)


# -- environment ---------------------------------------------------------------


def test_environment_value_must_be_a_string(project: Path) -> None:
    assert error(project, MINIMAL + "environment: {DEBUG: true}\n") == (
        f"{SOURCE}: environment.DEBUG: True is not a string (quote it in YAML)"
    )
    assert error(project, MINIMAL + "environment: {N: [1]}\n") == (
        f"{SOURCE}: environment.N: [1] is not a string"
    )


def test_environment_must_be_a_mapping(project: Path) -> None:
    assert error(project, MINIMAL + "environment: [A]\n") == (
        f"{SOURCE}: environment: ['A'] is not a mapping"
    )


def test_environment_name(project: Path) -> None:
    assert error(project, MINIMAL + "environment: {'1X': a}\n") == (
        f"{SOURCE}: environment: '1X' is not an environment variable name (letters, digits, '_')"
    )


# -- durations and sizes -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (3, 3.0),
        (1.5, 1.5),
        ("3s", 3.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("10", 10.0),
        (" 2 s ", 2.0),
        (0, 0.0),
        (".5s", 0.5),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, source="f", field="x") == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "f: x: -1 is negative"),
        ("-1s", "f: x: '-1s' is negative"),
        ("3 days", "f: x: '3 days' is not a duration (e.g. 3, 1.5s, 500ms, 2m, 1h)"),
        ("", "f: x: '' is not a duration (e.g. 3, 1.5s, 500ms, 2m, 1h)"),
        (True, "f: x: True is not a duration (e.g. 3, 1.5s, 500ms, 2m, 1h)"),
        (None, "f: x: None is not a duration (e.g. 3, 1.5s, 500ms, 2m, 1h)"),
        (float("inf"), "f: x: inf is not a duration (e.g. 3, 1.5s, 500ms, 2m, 1h)"),
        (float("nan"), "f: x: nan is not a duration (e.g. 3, 1.5s, 500ms, 2m, 1h)"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_duration(value, source="f", field="x")
    assert str(info.value) == message
    assert info.value.field == "x"


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1024, 1024),
        ("512KB", 512_000),
        ("10MB", 10_000_000),
        ("1GiB", 1024**3),
        ("2GB", 2_000_000_000),
        ("100", 100),
        ("7B", 7),
        ("1.5KiB", 1536),
        ("3 mib", 3 * 1024**2),
        ("1TB", 10**12),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value, source="f", field="x") == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-5, "f: x: -5 is negative"),
        ("-5MB", "f: x: '-5MB' is negative"),
        ("10 megs", "f: x: '10 megs' is not a size (e.g. 1048576, 512KB, 10MB, 1GiB)"),
        (1.5, "f: x: 1.5 is not a size (e.g. 1048576, 512KB, 10MB, 1GiB)"),
        (False, "f: x: False is not a size (e.g. 1048576, 512KB, 10MB, 1GiB)"),
    ],
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_size(value, source="f", field="x")
    assert str(info.value) == message


# -- the reference page's example is valid -------------------------------------


def test_docs_example_is_valid(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "manifest.md"
    example = docs.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "component.yaml").write_text(example)
    (tmp_path / "app.py").write_text("")
    manifest = load_component(tmp_path)
    assert manifest.name == "com.example.Thumbnailer"
    assert manifest.limits.max_instances == 2
