"""One option parser for every command (issue 13, issue 14 section 2): what each command's help lists is what its
parser accepts, in both spellings, and nothing else.

The option lists are read from `fusion-backup help COMMAND` (generated from the table in common/fb_config.c), so a
new row is tested without touching this file; KNOWN pins the options each command had before the table, so a row
that loses its command is caught. Every option is given as `--x v` and as `--x=v` together with --help: the parser
reads every option before --help prints, so an option it did not know would fail the run, and nothing else runs.
Then, per command, one option with a bad value is refused alike in both spellings with the option, the value and
what is accepted named, and one with a good value is taken alike (the command then stops at the same later point).
"""
from __future__ import annotations

import re
import subprocess

import pytest

# The options each command accepted before they were rows of the table (the hand-written parsers), plus a few
# shared settings: every one must still be listed, and accepted.
KNOWN = {
    "restore": ["table", "create", "truncate", "jobs", "chain-dir", "no-owner", "no-privileges", "pg", "secret-key",
                "pg-restore", "progress"],
    "verify": ["restore-into", "chain-dir", "secret-key", "progress"],
    "inspect": ["json", "secret-key"],
    "list": ["storage-path", "json", "storage-root", "index-key", "public-key", "pg"],
    "prune": ["storage-path", "retention-days", "dry-run", "config-id", "now-ms", "storage-root", "index-key"],
    "rekey": ["new-public-key", "new-data-key", "secret-key", "sign-key", "trusted-signer"],
    "replay": ["from", "job-id", "since", "dry-run", "pg", "max-attempts", "sign-key"],
    "status": ["brokers", "topic-prefix", "trusted-signer"],
    "tail": ["json", "from-beginning", "count", "timeout"],
    "topics": ["partitions", "completed-partitions", "dlq-partitions", "replication-factor"],
    "unarchive": ["module", "model", "id", "archived-before", "dry-run", "pg"],
    "event": ["no-publish", "concurrency", "retry-max"],
    "backup": ["configuration", "type", "table", "json", "pg", "storage-root", "public-key", "progress"],
    "check": ["json", "no-broker", "pg", "brokers", "storage-root"],
    "keygen": ["out", "sign"],
}

OPTION = re.compile(r"^  --([a-z0-9-]+)(?: (\S+))?(?:\s{2,}|\n)", re.M)
SAMPLE_TIME = "2026-12-01 10:00+05:30"


def _commands(bin) -> list[str]:
    out = bin.run("--help", check=True).stdout
    block = out.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def _options(help_text: str) -> dict[str, tuple[str | None, bool]]:
    """name -> (metavar or None for a flag, is a command option) from a generated help."""
    own, _, shared = help_text.partition("\nSettings (")
    found = {}
    for part, is_own in ((own.split("\nOptions (", 1)[-1], True), (shared, False)):
        for m in OPTION.finditer(part):
            found[m.group(1)] = (m.group(2), is_own)
    return found


def _sample(help_text: str, name: str, metavar: str | None) -> str | None:
    """A value the option accepts, from its own help: its default for a number, the first of an enum."""
    if metavar is None:
        return None
    if metavar == "TIME":
        return SAMPLE_TIME
    if "|" in metavar:
        return metavar.split("|")[0]
    if metavar == "N":
        m = re.search(rf"^  --{re.escape(name)} N .*\n\s+\((-?\d+)\.\.|^  --{re.escape(name)} N .*\n\s+\(at least (-?\d+)",
                      help_text, re.M)
        assert m, f"--{name} N shows no bounds in its help"
        return m.group(1) or m.group(2)
    return "x"


@pytest.fixture(scope="module")
def helps(bin) -> dict[str, str]:
    cmds = _commands(bin)
    assert set(KNOWN) <= set(cmds), f"commands missing from --help: {set(KNOWN) - set(cmds)}"
    out = {}
    for c in cmds:
        r = bin.run("help", c)
        assert r.returncode == 0 and r.stdout.startswith(f"usage: fusion-backup {c}"), (c, r.stdout[:200], r.stderr)
        out[c] = r.stdout
        # the same text from `COMMAND --help`
        assert bin.run(c, "--help").stdout == r.stdout, c
    return out


def test_help_lists_every_known_option(helps):
    for cmd, names in KNOWN.items():
        listed = _options(helps[cmd])
        missing = [n for n in names if n not in listed]
        assert not missing, f"help {cmd} does not list {missing}"
        assert "help" in listed and listed["help"][1], cmd


def test_every_listed_option_is_accepted_in_both_spellings(bin, helps):
    """Each command option of each command, and a few settings, as `--x v` and `--x=v` (with --help, which
    stops before the command does anything)."""
    for cmd, text in helps.items():
        listed = _options(text)
        settings = [n for n, (_, own) in listed.items() if not own and n != "config"][:4]
        for name in [n for n, (_, own) in listed.items() if own] + settings:
            value = _sample(text, name, listed[name][0])
            spellings = [[f"--{name}"], [f"--{name}=1"], [f"--no-{name}"]] if value is None else \
                [[f"--{name}", value], [f"--{name}={value}"]]
            for args in spellings:
                r = bin.run(cmd, *args, "--help")
                assert r.returncode == 0 and r.stdout == text, f"{cmd} {' '.join(args)}: {r.returncode} {r.stderr}"


def test_an_option_of_another_command_is_refused(bin, helps):
    own = {c: {n for n, (_, is_own) in _options(t).items() if is_own} for c, t in helps.items()}
    for cmd in helps:
        for other in sorted(set().union(*own.values()) - own[cmd])[:40]:
            r = bin.run(cmd, f"--{other}=1", "--help")
            assert r.returncode == 2 and f"--{other} is not an option of this command" in r.stderr, (cmd, other, r.stderr)
        r = bin.run(cmd, "--bogus-option", "--help")
        assert r.returncode == 2 and 'unknown option "--bogus-option"' in r.stderr, (cmd, r.stderr)


# Per command: a bad value refused alike in both spellings (exit 2, the option, the value, what is accepted).
BAD = {
    "restore": ("jobs", "17", "--jobs must be 1..16"),
    "verify": ("progress", "loud", "--progress must be auto, bar, lines or off"),
    "inspect": ("log-format", "xml", "--log-format must be text or json"),
    "list": ("s3-part-mib", "1", "--s3-part-mib must be 5..512"),
    "prune": ("retention-days", "-1", "--retention-days must be 0..36500"),
    "rekey": ("log-level", "loud", "--log-level must be debug, info, warn or error"),
    "replay": ("since", "2026-12-01 10:00", "the time \"2026-12-01 10:00\" has no zone"),
    "status": ("max-attempts", "0", "--max-attempts must be 1..1000"),
    "tail": ("count", "ten", "--count must be a whole number 0..1000000000"),
    "topics": ("replication-factor", "33", "--replication-factor must be 1..32"),
    "unarchive": ("archived-before", "last tuesday", "cannot read the time \"last tuesday\""),
    "event": ("concurrency", "65", "--concurrency must be 1..64"),
    "backup": ("type", "WEEKLY", "--type must be FULL, INCREMENTAL or DIFFERENTIAL"),
    "check": ("lock-timeout-ms", "-5", "--lock-timeout-ms must be 0..3600000"),
    "keygen": ("s3-url-style", "dns", "--s3-url-style must be path or virtual"),
}


@pytest.mark.parametrize("cmd", sorted(BAD))
def test_bad_values_are_refused_alike(bin, cmd):
    name, value, says = BAD[cmd]
    extra = ["create"] if cmd == "topics" else []
    a = bin.run(cmd, *extra, f"--{name}", value)
    b = bin.run(cmd, *extra, f"--{name}={value}")
    assert a.returncode == 2 and says in a.stderr and f'"{value}"' in a.stderr, a.stderr
    assert (b.returncode, b.stdout, b.stderr) == (a.returncode, a.stdout, a.stderr)


def test_good_values_are_taken_alike(bin, tmp_path):
    """A value that is taken changes where the command stops; both spellings stop at the same point."""
    def same(*args_space, args_eq, says):
        a, b = bin.run(*args_space), bin.run(*args_eq)
        assert says in a.stderr, (args_space, a.stderr)
        assert (a.returncode, a.stderr) == (b.returncode, b.stderr), (a.stderr, b.stderr)

    same("restore", "a.fbak", "--jobs", "2", args_eq=["restore", "a.fbak", "--jobs=2"], says="--jobs needs --create")
    same("list", "--storage-root", str(tmp_path), "--storage-path", "x",
         args_eq=["list", f"--storage-root={tmp_path}", "--storage-path=x"], says="--index-key")
    same("prune", "--storage-root", str(tmp_path), "--storage-path", "x", "--retention-days", "3",
         args_eq=["prune", f"--storage-root={tmp_path}", "--storage-path=x", "--retention-days=3"], says="--index-key")
    same("unarchive", "--module", "m", "--model", "n", "--archived-before", SAMPLE_TIME, "--pg", "port=1 host=127.0.0.1",
         args_eq=["unarchive", "--module=m", "--model=n", f"--archived-before={SAMPLE_TIME}", "--pg=port=1 host=127.0.0.1"],
         says="127.0.0.1")
    for spelling in (["--out", str(tmp_path / "k1")], [f"--out={tmp_path / 'k2'}"]):
        r = bin.run("keygen", *spelling)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "k1.pub").exists() and (tmp_path / "k2.pub").exists()


def test_worker_help_is_generated_and_its_options_parse_alike(bin):
    r = subprocess.run([bin.worker, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("usage: fusion-backup-worker"), r.stdout[:200]
    listed = _options(r.stdout)
    for name in ("role", "concurrency", "max-deliveries", "trusted-requester", "version", "help"):
        assert name in listed, name
    assert "table" not in listed and "json" not in listed
    runs = [subprocess.run([bin.worker, *args], capture_output=True, text=True, timeout=30)
            for args in (["--concurrency", "0"], ["--concurrency=0"])]
    assert runs[0].returncode == 2 and '--concurrency must be 1..64, got "0"' in runs[0].stderr, runs[0].stderr
    assert (runs[1].returncode, runs[1].stderr) == (runs[0].returncode, runs[0].stderr)
    bad = subprocess.run([bin.worker, "--table", "x"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--table is not an option of this command" in bad.stderr, bad.stderr
