"""k8s_schema.py - check Kubernetes manifests against the API's schema, as
Debian's python3-kubernetes models describe it (Kubernetes 1.22 API).

    python3 k8s_schema.py FILE...      ("-" reads standard input)

Prints one JSON object: {"objects": [every document, as JSON], "problems":
["FILE: Kind/name: path: what is wrong", ...]}; exit status 0 either way, 2
when python3-kubernetes or PyYAML is missing. Run it with a Python that has
them (Debian's /usr/bin/python3 with python3-kubernetes): test_k8s.py does.

What counts as a problem, for each object and everything inside it:
  - apiVersion not the one of its kind, or a kind not in KINDS;
  - a field the API does not have (a typo: "contianers", "readynessProbe");
  - a value of the wrong type (a string where an int goes; a quantity such
    as a resource limit may be a string or a number, as the API allows);
  - a required field missing (the models refuse None: containers, image...).
"""
import json
import sys

try:
    import yaml
    import kubernetes.client as kc
except ImportError as e:
    print("k8s_schema.py needs PyYAML and python3-kubernetes: %s" % e, file=sys.stderr)
    sys.exit(2)

KINDS = {"ConfigMap": "v1", "Service": "v1", "PersistentVolumeClaim": "v1", "Pod": "v1",
         "Secret": "v1", "Namespace": "v1", "ServiceAccount": "v1",
         "Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
         "Job": "batch/v1", "CronJob": "batch/v1"}
# Fields whose values are resource.Quantity: a string or a number.
QUANTITY_MAPS = {("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests")}


def check(value, typ, path, out, quantity=False):
    """Check VALUE against the models' type string TYP; append to OUT."""
    if typ == "object":
        return
    if typ.startswith("list["):
        if not isinstance(value, list):
            out.append("%s: a list expected, got %r" % (path, value))
            return
        for i, v in enumerate(value):
            check(v, typ[5:-1], "%s[%d]" % (path, i), out)
        return
    if typ.startswith("dict("):
        if not isinstance(value, dict):
            out.append("%s: a map expected, got %r" % (path, value))
            return
        inner = typ[5:-1].split(",", 1)[1].strip()
        for k, v in value.items():
            check(v, inner, "%s.%s" % (path, k), out, quantity)
        return
    scalar = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str,
              "date": str}
    if typ in scalar:
        if quantity and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        ok = isinstance(value, scalar[typ]) and not (typ in ("int", "float") and
                                                     isinstance(value, bool))
        if not ok:
            out.append("%s: %s expected, got %r" % (path, typ, value))
        return
    cls = getattr(kc, typ, None)
    if cls is None:
        out.append("%s: unknown model type %s" % (path, typ))
        return
    if not isinstance(value, dict):
        out.append("%s: an object (%s) expected, got %r" % (path, typ, value))
        return
    by_json = {j: p for p, j in cls.attribute_map.items()}
    kwargs = {}
    for k, v in value.items():
        if k not in by_json:
            out.append("%s.%s: no such field in %s" % (path, k, typ))
            continue
        py = by_json[k]
        kwargs[py] = v
        check(v, cls.openapi_types[py], "%s.%s" % (path, k), out,
              (typ, py) in QUANTITY_MAPS)
    try:
        cls(**kwargs)  # the models' setters refuse a required field left out
    except (ValueError, TypeError) as e:
        out.append("%s: %s" % (path, e))


def check_object(obj, where):
    out = []
    if not isinstance(obj, dict):
        return ["%s: not an object: %r" % (where, obj)]
    kind, api = obj.get("kind"), obj.get("apiVersion")
    name = (obj.get("metadata") or {}).get("name", "?")
    where = "%s: %s/%s" % (where, kind, name)
    if kind not in KINDS:
        return ["%s: kind %r not known to this check" % (where, kind)]
    if api != KINDS[kind]:
        out.append("%s: apiVersion %r, not %s" % (where, api, KINDS[kind]))
    check(obj, "V1" + kind, where, out)
    return out


def main(paths):
    objects, problems = [], []
    for path in paths:
        text = sys.stdin.read() if path == "-" else open(path).read()
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            problems.append("%s: YAML: %s" % (path, e))
            continue
        for d in docs:
            objects.append(d)
            problems += check_object(d, path)
    json.dump({"objects": objects, "problems": problems}, sys.stdout, default=str)


main(sys.argv[1:])
