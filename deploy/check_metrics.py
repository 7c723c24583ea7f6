#!/usr/bin/env python3
"""Checks deploy/ against the metric tables of docs/operations.md.

The tables are the contract with the Go code. This script fails (exit 1, one line per
problem) when the alerting rules, their promtool tests or the Grafana dashboard:
  - name a metric the tables do not list (histograms: _bucket, _sum, _count);
  - select or group by a label the metric does not have, or select the wrong scope;
  - sum a replica-scope metric without a max over the nodes inside the sum;
  - have an alert without severity, summary, a description linking to its section of
    docs/operations.md, or without a promtool case that fires it and one that does not;
  - (dashboard) are not valid JSON, are older than schemaVersion 39, lack the datasource
    variable, or have a panel not bound to it.
With --dashboard-rules FILE it also writes the dashboard's queries, Grafana's variables
replaced, as recording rules, for `promtool check rules FILE` to parse.
It uses only the standard library, so CI needs nothing but python3. Run: make rules-check.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "operations.md")
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yaml")
TESTS = os.path.join(ROOT, "deploy", "prometheus", "alerts_test.yaml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "sluice.json")

# Labels Prometheus adds or PromQL makes, on every series.
TARGET_LABELS = {"job", "instance"}
# Metrics Prometheus itself makes; `up` has only the target labels.
BUILTIN = {"up": {"type": "gauge", "labels": set(), "scopes": {"—"}}}

errors = []


def err(where, msg):
    errors.append(f"{os.path.relpath(where, ROOT)}: {msg}")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def documented_metrics():
    """name -> {type, labels, scopes} from the tables of docs/operations.md."""
    row = re.compile(r"^\| `([a-z_:][a-z0-9_:]*)` \| (gauge|counter|histogram) \| ([^|]*) \| ([^|]*) \|")
    metrics = dict(BUILTIN)
    for line in read(DOCS).splitlines():
        m = row.match(line)
        if not m:
            continue
        name, typ, labels, scope = m.groups()
        labs = set(re.findall(r"`([a-z_]+)`", labels))
        scope = scope.strip()
        if name in metrics and (metrics[name]["type"] != typ or metrics[name]["labels"] != labs):
            err(DOCS, f"{name} is listed twice with different types or labels")
        entry = metrics.setdefault(name, {"type": typ, "labels": labs, "scopes": set()})
        entry["scopes"].add(scope)
    if len(metrics) < 10:
        err(DOCS, f"found only {len(metrics)} metrics in the tables; has the table format changed?")
    return metrics


def series_names(metrics):
    """Every series name a scrape can return -> (metric, is_bucket)."""
    out = {}
    for name, m in metrics.items():
        if m["type"] == "histogram":
            out[name + "_bucket"] = (name, True)
            out[name + "_sum"] = (name, False)
            out[name + "_count"] = (name, False)
        else:
            out[name] = (name, False)
    return out


METRIC_TOKEN = re.compile(r"(?<![\w:$.#/-])((?:sluice|go|process)_[a-z0-9_]+|up)\b(?!\s*\()")
SELECTOR = re.compile(r"\b((?:sluice|go|process)_[a-z0-9_]+|up)\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SUM = re.compile(r"\bsum\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(")


def balanced(text, open_at):
    """The text inside the parenthesis that opens at text[open_at]."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
    return text[open_at + 1:]


def check_expr(where, expr, metrics, names):
    """Metric names, selector labels and scopes, grouping labels, sums of replica series."""
    used = set()
    for tok in METRIC_TOKEN.findall(expr):
        if tok not in names:
            err(where, f"unknown metric {tok} in: {expr.strip()}")
            continue
        used.add(names[tok][0])
    for name, body in SELECTOR.findall(expr):
        if name not in names:
            continue
        base, bucket = names[name]
        allowed = metrics[base]["labels"] | TARGET_LABELS | ({"le"} if bucket else set())
        if metrics[base]["scopes"] != {"—"}:
            allowed.add("scope")
        for part in filter(str.strip, body.split(",")):
            m = MATCHER.fullmatch(part)
            if not m:
                err(where, f"cannot read matcher {part!r} of {name}")
                continue
            label, op, value = m.groups()
            if label not in allowed:
                err(where, f"{name} has no label {label!r} (it has {sorted(allowed)})")
            if label == "scope" and op == "=" and value not in metrics[base]["scopes"]:
                err(where, f'{name} is scope {sorted(metrics[base]["scopes"])}, selected as scope="{value}"')
    if used:
        labels = set(TARGET_LABELS) | {"le", "scope"}
        for base in used:
            labels |= metrics[base]["labels"]
        for group in GROUPING.findall(expr):
            for label in filter(None, (l.strip() for l in group.split(","))):
                if label not in labels:
                    err(where, f"grouping by {label!r}, which none of {sorted(used)} has")
    for m in SUM.finditer(expr):
        inner = balanced(expr, m.end() - 1)
        replica = [t for t in METRIC_TOKEN.findall(inner)
                   if t in names and "replica" in metrics[names[t][0]]["scopes"]]
        if replica and not re.search(r"\bmax\b", inner):
            err(where, f"sums replica-scope {replica[0]} without a max over the nodes: {expr.strip()}")
    return used


def anchor(heading):
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def alert_rules():
    """[(name, text of the rule, expr)] from alerts.yaml, without a YAML library."""
    text = read(ALERTS)
    rules = []
    for chunk in re.split(r"\n(?=[ \t]*- alert:)", text)[1:]:
        name = re.search(r"- alert:\s*(\S+)", chunk).group(1)
        lines = chunk.splitlines()
        expr = []
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)expr:\s*(.*)$", line)
            if not m:
                continue
            if m.group(2) not in ("|", ">", "|-", ">-"):
                expr = [m.group(2)]
                break
            indent = len(m.group(1))
            for follow in lines[i + 1:]:
                if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                    break
                expr.append(follow)
            break
        body = "\n".join(l for l in lines if not l.lstrip().startswith("#"))
        rules.append((name, body, "\n".join(expr)))
    return rules


def check_alerts(metrics, names):
    docs = read(DOCS)
    headings = {anchor(h) for h in re.findall(r"^#+ (.+)$", docs, re.M)}
    used = set()
    rules = alert_rules()
    if not rules:
        err(ALERTS, "no alerting rules found")
    for name, body, expr in rules:
        where = f"{ALERTS} ({name})"
        if not expr.strip():
            err(ALERTS, f"{name}: no expr")
        used |= check_expr(ALERTS, expr, metrics, names)
        if 'job="sluice"' not in expr:
            err(ALERTS, f'{name}: the expr does not select job="sluice"')
        if not re.search(r"^\s*severity:\s*(critical|warning|info)\s*$", body, re.M):
            err(ALERTS, f"{name}: no severity label (critical, warning or info)")
        for key in ("summary", "description"):
            if not re.search(rf"^\s*{key}:\s*\S", body, re.M):
                err(ALERTS, f"{name}: no {key} annotation")
        want = "docs/operations.md#" + anchor(name)
        desc = re.search(r"^\s*description:\s*(.*)$", body, re.M)
        if not desc or want not in desc.group(1):
            err(ALERTS, f"{name}: the description does not link {want}")
        if anchor(name) not in headings:
            err(DOCS, f"no section for alert {name} (anchor #{anchor(name)})")
    return [r[0] for r in rules], used


def check_tests(alerts, metrics, names):
    text = read(TESTS)
    for series in re.findall(r"series:\s*'([^']*)'", text):
        check_expr(TESTS, series, metrics, names)
        m = SELECTOR.match(series)
        if not m:
            err(TESTS, f"cannot read series {series}")
            continue
        labels = {p.split("=")[0].strip() for p in m.group(2).split(",")}
        missing = {"job", "instance"} - labels
        base = names.get(m.group(1), (None,))[0]
        if base and metrics[base]["scopes"] != {"—"} and "scope" not in labels:
            missing.add("scope")
        if missing:
            err(TESTS, f"series {series} lacks {sorted(missing)}")
    fires, quiet = set(), set()
    for case in re.finditer(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*(\[\])?", text):
        (quiet if case.group(2) else fires).add(case.group(1))
    for name in alerts:
        if name not in fires:
            err(TESTS, f"no case where {name} fires")
        if name not in quiet:
            err(TESTS, f"no case where {name} stays quiet")
    for name in (fires | quiet) - set(alerts):
        err(TESTS, f"tests an alert that alerts.yaml does not have: {name}")


GRAFANA_VARS = {"$__rate_interval": "5m", "$instance": ".*", "$tier": ".*"}


def promql(expr):
    """A dashboard query as PromQL: Grafana's variables and label_values() replaced."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*[a-z_]+\)\s*", expr)
    if m:
        expr = m.group(1)
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        err(DASHBOARD, f"unknown Grafana variable in: {expr}")
    return expr


def check_dashboard(metrics, names, queries):
    try:
        d = json.loads(read(DASHBOARD))
    except json.JSONDecodeError as e:
        err(DASHBOARD, f"not valid JSON: {e}")
        return set()
    if d.get("schemaVersion", 0) < 39:
        err(DASHBOARD, f"schemaVersion {d.get('schemaVersion')} is under 39")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err(DASHBOARD, "no datasource variable of type datasource for prometheus")
    used = set()
    for v in variables.values():
        if v.get("type") == "query":
            used |= check_expr(DASHBOARD, v.get("definition", ""), metrics, names)
            queries.append(promql(v.get("definition", "")))
    ids = set()
    panels = list(d.get("panels", []))
    for p in panels:
        panels.extend(p.get("panels", []))
        if p.get("id") in ids:
            err(DASHBOARD, f"panel id {p.get('id')} used twice")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        where = f"{DASHBOARD} ({p.get('title')})"
        if p.get("datasource", {}).get("uid") != "${datasource}":
            err(DASHBOARD, f"panel {p.get('title')!r} is not bound to ${{datasource}}")
        if not p.get("targets"):
            err(DASHBOARD, f"panel {p.get('title')!r} has no queries")
        for t in p.get("targets", []):
            if not t.get("expr", "").strip():
                err(DASHBOARD, f"panel {p.get('title')!r} has an empty query")
            used |= check_expr(DASHBOARD, t.get("expr", ""), metrics, names)
            queries.append(promql(t.get("expr", "")))
    return used


def write_rules(path, queries):
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Written by deploy/check_metrics.py: the dashboard's queries, for promtool to parse.\n")
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, q in enumerate(queries):
            f.write(f"      - record: dashboard_query_{i}\n        expr: {json.dumps(q)}\n")


def main():
    metrics = documented_metrics()
    names = series_names(metrics)
    alerts, used_alerts = check_alerts(metrics, names)
    check_tests(alerts, metrics, names)
    queries = []
    used_dash = check_dashboard(metrics, names, queries)
    if len(sys.argv) == 3 and sys.argv[1] == "--dashboard-rules":
        write_rules(sys.argv[2], queries)
    elif len(sys.argv) != 1:
        print("usage: check_metrics.py [--dashboard-rules FILE]", file=sys.stderr)
        return 2
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check_metrics: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    unused = sorted(set(metrics) - used_dash - used_alerts - set(BUILTIN))
    print(f"check_metrics: {len(metrics) - len(BUILTIN)} documented metrics; {len(alerts)} alerts use "
          f"{len(used_alerts)}, the dashboard uses {len(used_dash)}; unused: {', '.join(unused) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
