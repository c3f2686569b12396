"""test_k8s.py - the Kubernetes manifests of docker/k8s, checked without a
cluster (none runs here, and none has run them).

- `kubectl kustomize docker/k8s` renders them offline (Debian's
  kubernetes-client, or any kubectl): the ConfigMap is generated from
  ollama-proxy.conf with a content hash in its name, and the Deployment
  refers to that name, so a changed config rolls the proxy (no SIGHUP); the
  same config renders the same name, a changed one another;
- every object of the kustomization and of classify.yaml passes the
  Kubernetes API schema of python3-kubernetes (k8s_schema.py: no unknown
  field, right types, required fields there), and broken copies do not;
- how they fit together: one Ollama pod per GPU (nvidia.com/gpu: 1) in a
  StatefulSet whose serviceName is a headless Service selecting its pods;
  the proxy config's dns row names that Service's cluster DNS name and port,
  and its max_concurrent equals OLLAMA_NUM_PARALLEL; the proxy Deployment
  mounts the ConfigMap where the image reads its config, has readiness and
  liveness probes on GET / of its port, never drops below one ready pod in a
  rollout, and outlives its own shutdown_timeout_s; its Service selects it;
  the classify Job uses the proxy's image and Service URL and a volume
  claimed in the same file.

Not checked: `kubectl apply --dry-run=client` needs an API server for its
discovery and schema (there is none: it fails before looking at a file), so
the schema comes from python3-kubernetes instead (the ConfigMap's
ollama-proxy.conf passes `ollama-proxy --check`); anything a cluster does: scheduling on GPUs, DNS, the rollout itself.
"""
import copy
import json
import os
import re
import shutil
import subprocess

from harness import SRC, binary, eq, ok, run, tmpdir

K8S = os.path.join(SRC, "docker", "k8s")
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s_schema.py")
CONF_PATH = "/etc/ollama-proxy/ollama-proxy.conf"


def sh(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, KUBECONFIG=os.devnull), **kw)


def kubectl():
    exe = shutil.which("kubectl")
    ok(exe, "kubectl is not installed (kubernetes-client is in the test group of "
            ".ci/packages: .ci/install-deps test)")
    return exe


def schema_python():
    """A Python with PyYAML and python3-kubernetes (Debian's, as a rule)."""
    for py in ("/usr/bin/python3", shutil.which("python3")):
        if py and sh([py, "-c", "import yaml, kubernetes"]).returncode == 0:
            return py
    raise AssertionError("no python3 with the kubernetes module (python3-kubernetes is in "
                         "the test group of .ci/packages: .ci/install-deps test)")


def render(folder=K8S):
    r = sh([kubectl(), "kustomize", folder])
    eq(r.returncode, 0, "kubectl kustomize %s:\n%s" % (folder, r.stderr))
    return r.stdout


def schema(text=None, paths=()):
    """(objects, problems) of YAML TEXT and/or files PATHS."""
    args = [schema_python(), SCHEMA] + (["-"] if text is not None else []) + list(paths)
    r = sh(args, input=text)
    eq(r.returncode, 0, "k8s_schema.py: %s" % r.stderr)
    d = json.loads(r.stdout)
    return d["objects"], d["problems"]


_objects = []


def objects():
    """Every object of docker/k8s, rendered (a fresh copy on each call)."""
    if not _objects:
        _objects.extend(schema(render(), [os.path.join(K8S, "classify.yaml")])[0])
    return copy.deepcopy(_objects)


def one(objs, kind, name=None):
    hits = [o for o in objs if o["kind"] == kind and (name is None or
                                                       o["metadata"]["name"] == name)]
    eq(len(hits), 1, "objects of kind %s%s" % (kind, " named " + name if name else ""))
    return hits[0]


def pod_spec(o):
    return o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"]


def pod_labels(o):
    return o["metadata"]["labels"] if o["kind"] == "Pod" else \
        o["spec"]["template"]["metadata"]["labels"]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_port(c, port):
    """The number a probe's or Service's port (name or number) means in C."""
    if isinstance(port, int):
        return port
    for p in c.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError("container %s has no port named %s" % (c["name"], port))


def conf_of(objs):
    """The proxy config the ConfigMap carries, comments dropped."""
    return re.sub(r"#.*", "", one(objs, "ConfigMap")["data"]["ollama-proxy.conf"])


def dns_rows(conf):
    """[(name, host, port, max_concurrent, resolve_s, adaptive)] of the dns
    backend rows."""
    rows = re.findall(r'\{\s*name\s*=\s*"([^"]+)"\s*;\s*dns\s*=\s*"([^":]+):(\d+)"\s*;'
                      r'\s*max_concurrent\s*=\s*(\d+)\s*;(\s*adaptive\s*=\s*true\s*;)?'
                      r'\s*resolve_s\s*=\s*(\d+)\s*;\s*\}', conf)
    return [(n, h, int(p), int(m), int(r), bool(a)) for n, h, p, m, a, r in rows]


def namespace():
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        m = re.search(r"^namespace:\s*(\S+)", f.read(), re.M)
    return m.group(1) if m else "default"


# ---- rendering and schema ----

def test_renders_with_hashed_configmap():
    objs = objects()
    kinds = sorted(o["kind"] for o in objs)
    eq(kinds, sorted(["ConfigMap", "Service", "Service", "Deployment", "StatefulSet",
                      "PersistentVolumeClaim", "Pod", "Job"]), "kinds of docker/k8s")
    cm = one(objs, "ConfigMap")
    ok(re.match(r"ollama-proxy-config-[a-z0-9]{6,}$", cm["metadata"]["name"]),
       "the ConfigMap's name carries no content hash: %s" % cm["metadata"]["name"])
    with open(os.path.join(K8S, "ollama-proxy.conf")) as f:
        eq(cm["data"].get("ollama-proxy.conf"), f.read(), "the ConfigMap's ollama-proxy.conf")
    dep = one(objs, "Deployment")
    names = [v["configMap"]["name"] for v in pod_spec(dep).get("volumes", [])
             if "configMap" in v]
    eq(names, [cm["metadata"]["name"]], "ConfigMaps the proxy Deployment mounts")


def test_config_change_rolls_the_proxy():
    """Same content, same name; other content, another name in both the
    ConfigMap and the Deployment's pod template (which is what rolls it)."""
    def names(folder):
        objs, _ = schema(render(folder))
        dep = one(objs, "Deployment")
        vol = [v["configMap"]["name"] for v in pod_spec(dep)["volumes"] if "configMap" in v]
        return one(objs, "ConfigMap")["metadata"]["name"], vol
    copy = os.path.join(tmpdir(), "k8s")
    shutil.copytree(K8S, copy)
    before = names(copy)
    eq(names(copy), before, "two renders of the same config")
    conf = os.path.join(copy, "ollama-proxy.conf")
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("max_length = 1024", "max_length = 2048"))
    after = names(copy)
    ok(after[0] != before[0], "a changed config kept the ConfigMap name %s" % before[0])
    eq(after[1], [after[0]], "the Deployment follows the new ConfigMap name")


def test_schema():
    objs, problems = schema(render(), [os.path.join(K8S, "classify.yaml")])
    eq(problems, [], "schema problems")
    ok(len(objs) == 8, "objects checked: %d" % len(objs))


def test_schema_catches_breakage():
    text = render()
    with open(os.path.join(K8S, "classify.yaml")) as f:
        job = f.read()
    for what, broken, want in (
            ("a typo in a field", text.replace("readinessProbe:", "readynessProbe:", 1),
             "readynessProbe: no such field"),
            ("a string for an int", text.replace("replicas: 2", 'replicas: "2"', 1),
             "replicas: int expected"),
            ("a missing required field", text.replace("containers:", "containerz:", 1),
             "`containers`, must not be `None`"),
            ("a wrong apiVersion", text.replace("apiVersion: apps/v1", "apiVersion: v1", 1),
             "apiVersion 'v1', not apps/v1"),
            ("a typo in the Job", job.replace("restartPolicy:", "restartpolicy:", 1),
             "restartpolicy: no such field")):
        ok(broken not in (text, job), "mutation did not apply: " + what)
        _, problems = schema(broken)
        ok(any(want in p for p in problems), "%s not caught (%s): %s" %
           (what, want, problems))


# ---- how the objects fit together ----

def check_ollama_one_pod_per_gpu(objs):
    sts = one(objs, "StatefulSet", "ollama")
    spec = pod_spec(sts)
    c = spec["containers"][0]
    eq(str(c["resources"]["limits"].get("nvidia.com/gpu")), "1",
       "nvidia.com/gpu limit of each Ollama pod")
    ok(any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])),
       "no toleration for the nvidia.com/gpu taint of GPU nodes")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    eq(env.get("OLLAMA_HOST"), "0.0.0.0:11434", "OLLAMA_HOST")
    rows = dns_rows(conf_of(objs))
    eq(len(rows), 1, "dns backend rows in ollama-proxy.conf")
    eq(int(env.get("OLLAMA_NUM_PARALLEL", 0)), rows[0][3],
       "OLLAMA_NUM_PARALLEL vs max_concurrent (the adaptive ceiling) of the dns row")
    ok(rows[0][5], "the dns row is adaptive: each pod's cap is found under that ceiling")
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe, {}).get("httpGet", {})
        eq((p.get("path"), p.get("port") and container_port(c, p["port"])), ("/", 11434),
           "Ollama's %s" % probe)
    ok(any(m["mountPath"] == "/root/.ollama" for m in c.get("volumeMounts", [])),
       "Ollama's models are not on a volume")
    eq([t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])],
       [m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/root/.ollama"],
       "models volume claim template")


def check_headless_service_is_the_dns_row(objs):
    sts = one(objs, "StatefulSet", "ollama")
    svc = one(objs, "Service", sts["spec"]["serviceName"])
    eq(svc["spec"].get("clusterIP"), "None", "the Ollama Service is headless")
    ok(selects(svc["spec"]["selector"], pod_labels(sts)),
       "the headless Service does not select the Ollama pods")
    ok(not svc["spec"].get("publishNotReadyAddresses"),
       "pods that are not ready would be in DNS")
    name, host, port, cap, resolve_s, _ = dns_rows(conf_of(objs))[0]
    eq(host, "%s.%s.svc.cluster.local" % (svc["metadata"]["name"], namespace()),
       "the dns row's name")
    sp = [p for p in svc["spec"]["ports"] if p["port"] == port]
    ok(sp, "the Service has no port %d" % port)
    eq(container_port(pod_spec(sts)["containers"][0], sp[0].get("targetPort", port)), port,
       "the Service's port is the pods' port (the proxy dials pod:%d)" % port)
    ok(1 <= resolve_s <= 60, "resolve_s %d" % resolve_s)


def check_proxy_deployment(objs):
    dep = one(objs, "Deployment", "ollama-proxy")
    spec = pod_spec(dep)
    c = spec["containers"][0]
    ok(re.search(r'^listen\s*=\s*"0\.0\.0\.0:11434"', conf_of(objs), re.M),
       "ollama-proxy.conf must listen on 0.0.0.0:11434")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    cm_vol = [v for v in spec["volumes"] if "configMap" in v][0]
    eq(os.path.join(mounts.get(cm_vol["name"], "?"), "ollama-proxy.conf"), CONF_PATH,
       "where the ConfigMap's ollama-proxy.conf lands")
    cmd = c.get("command") or []
    ok(not cmd or CONF_PATH in cmd, "the proxy reads another config: %s" % cmd)
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe, {}).get("httpGet", {})
        eq((p.get("path"), p.get("port") and container_port(c, p["port"])), ("/", 11434),
           "the proxy's %s" % probe)
    ru = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
    eq(ru.get("maxUnavailable"), 0, "a rollout keeps a ready proxy (maxUnavailable)")
    m = re.search(r"^shutdown_timeout_s\s*=\s*(\d+)", conf_of(objs), re.M)
    drain = int(m.group(1)) if m else 30
    ok(spec.get("terminationGracePeriodSeconds", 30) > drain,
       "terminationGracePeriodSeconds %s does not outlast shutdown_timeout_s %d" %
       (spec.get("terminationGracePeriodSeconds"), drain))
    eq(spec.get("securityContext", {}).get("runAsUser"), 10001, "the proxy's uid (image's)")
    svc = one(objs, "Service", "ollama-proxy")
    ok(selects(svc["spec"]["selector"], pod_labels(dep)),
       "the ollama-proxy Service does not select the proxy")
    ok(svc["spec"].get("clusterIP") != "None", "the proxy's Service is headless")
    eq(container_port(c, svc["spec"]["ports"][0].get("targetPort")), 11434,
       "the proxy Service's target port")


def check_classify_job(objs):
    dep = one(objs, "Deployment", "ollama-proxy")
    job = one(objs, "Job", "ollama-classify")
    spec = pod_spec(job)
    ok(spec["restartPolicy"] in ("OnFailure", "Never"), "restartPolicy")
    c = [x for x in spec["containers"] if x["name"] == "classify"][0]
    eq(c["image"], pod_spec(dep)["containers"][0]["image"], "the job's image")
    cmd = c["command"]
    eq(cmd[0], "ollama-classify", "the job's program")
    svc = one(objs, "Service", "ollama-proxy")
    eq(cmd[cmd.index("--url") + 1],
       "http://%s:%d" % (svc["metadata"]["name"], svc["spec"]["ports"][0]["port"]),
       "the job's --url")
    claims = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    vols = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
            if "persistentVolumeClaim" in v}
    ok(vols and set(vols.values()) <= claims, "the job's volumes %s vs claims %s" %
       (vols, claims))
    mount = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in vols][0]
    for flag in ("-i", "-o"):
        ok(cmd[cmd.index(flag) + 1].startswith(mount + "/"), "%s not on the volume" % flag)
    ok(cmd[cmd.index("-l") + 1].startswith("@" + mount + "/"), "-l not on the volume")
    files = one(objs, "Pod", "classify-files")
    fvols = {v["persistentVolumeClaim"]["claimName"] for v in pod_spec(files)["volumes"]
             if "persistentVolumeClaim" in v}
    eq(fvols, set(vols.values()), "classify-files holds the job's volume")
    aff = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    ok(any(selects(a["labelSelector"]["matchLabels"], pod_labels(files)) for a in aff),
       "the job is not put beside classify-files (ReadWriteOnce volume)")


CHECKS = (check_ollama_one_pod_per_gpu, check_headless_service_is_the_dns_row,
          check_proxy_deployment, check_classify_job)


def test_objects_fit_together():
    objs = objects()
    for check in CHECKS:
        check(objs)


def _set(objs, kind, name, path, value):
    """Set PATH (a list of keys and indexes) of object KIND/NAME to VALUE."""
    o = one(objs, kind, name)
    for k in path[:-1]:
        o = o[k]
    o[path[-1]] = value


def test_checks_catch_breakage():
    """Each way of breaking how the objects fit makes a check fail."""
    pod = ["spec", "template", "spec"]
    c0 = pod + ["containers", 0]

    def conf_sub(objs, a, b):
        cm = one(objs, "ConfigMap")
        new = cm["data"]["ollama-proxy.conf"].replace(a, b)
        ok(new != cm["data"]["ollama-proxy.conf"], "conf mutation did not apply: " + a)
        cm["data"]["ollama-proxy.conf"] = new

    mutations = (
        ("two GPUs per pod", lambda o: _set(o, "StatefulSet", "ollama",
                                            c0 + ["resources", "limits", "nvidia.com/gpu"], 2)),
        ("OLLAMA_NUM_PARALLEL 8", lambda o: _set(o, "StatefulSet", "ollama",
                                                 c0 + ["env", 1, "value"], "8")),
        ("a Service that selects nothing", lambda o: _set(
            o, "Service", "ollama", ["spec", "selector"], {"app.kubernetes.io/name": "olama"})),
        ("a Service with a cluster IP", lambda o: _set(o, "Service", "ollama",
                                                       ["spec", "clusterIP"], "10.0.0.9")),
        ("a dns row naming another Service", lambda o: conf_sub(
            o, "ollama.default.svc", "ollama-gpu.default.svc")),
        ("a dns row on another port", lambda o: conf_sub(o, "cluster.local:11434",
                                                         "cluster.local:11435")),
        ("a dns row with fixed caps", lambda o: conf_sub(o, " adaptive = true;", "")),
        ("a proxy listening on loopback", lambda o: conf_sub(o, '"0.0.0.0:11434"',
                                                             '"127.0.0.1:11434"')),
        ("the config mounted elsewhere", lambda o: _set(
            o, "Deployment", "ollama-proxy", c0 + ["volumeMounts", 0, "mountPath"], "/etc/x")),
        ("a readiness probe on /api/tags", lambda o: _set(
            o, "Deployment", "ollama-proxy", c0 + ["readinessProbe", "httpGet", "path"],
            "/api/tags")),
        ("no liveness probe", lambda o: one(o, "Deployment", "ollama-proxy")["spec"][
            "template"]["spec"]["containers"][0].pop("livenessProbe")),
        ("a rollout that drops the proxy", lambda o: _set(
            o, "Deployment", "ollama-proxy", ["spec", "strategy", "rollingUpdate",
                                              "maxUnavailable"], 1)),
        ("a grace period shorter than the drain", lambda o: _set(
            o, "Deployment", "ollama-proxy", pod + ["terminationGracePeriodSeconds"], 60)),
        ("a job that skips the proxy", lambda o: _set(
            o, "Job", "ollama-classify", c0 + ["command", -1], "http://ollama:11434")),
        ("a job on a claim nobody made", lambda o: _set(
            o, "Job", "ollama-classify", pod + ["volumes", 0, "persistentVolumeClaim",
                                                "claimName"], "data")),
    )
    for what, mutate in mutations:
        objs = objects()
        mutate(objs)
        failed = []
        for check in CHECKS:
            try:
                check(objs)
            except (AssertionError, KeyError, IndexError) as e:
                failed.append("%s: %s" % (check.__name__, str(e)[:120]))
        ok(failed, "no check noticed %s" % what)


def test_proxy_config_passes_check():
    """The ConfigMap's ollama-proxy.conf, dns row included, is one the proxy
    accepts (the name does not resolve here: a warning, not an error)."""
    r = subprocess.run([binary("ollama-proxy"), "--check", "-c",
                        os.path.join(K8S, "ollama-proxy.conf")], capture_output=True, text=True)
    eq(r.returncode, 0, "ollama-proxy --check: " + r.stderr)
    ok("gpu" in r.stdout, r.stdout)


def test_no_cluster():
    """Said plainly, in the test log too."""
    r = sh([kubectl(), "version", "--client"])
    print("kubectl: %s" % (r.stdout.strip().splitlines() or ["?"])[0])
    print("no cluster ran these manifests: rendered and schema-checked only")


run(globals())
