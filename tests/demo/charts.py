"""charts.py - the demo's charts (gnuplot, pngcairo) and the data files
behind them, from demo.py's samples: throughput.png (each backend's items/s,
slots busy, the proxy's effective cap and requests waiting inside Ollama over
the whole demo) and shares.png (row 7's two clients). Without gnuplot the
.dat files are still written and the charts are skipped (None)."""
import os
import shutil
import subprocess


COLORS = ["#4477aa", "#ee7733", "#228833", "#aa3377", "#66ccee", "#ccbb44", "#bbbbbb", "#ee6677"]


def gnuplot(out, name, script):
    gp = os.path.join(out, name + ".gp")
    with open(gp, "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", gp], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        print("gnuplot failed on %s:\n%s" % (gp, r.stdout.decode("utf-8", "replace")))
        return None
    return os.path.join(out, name + ".png")


def write_chart(out, scale, preset, parallel, sampler, rows, names, job_rate):
    """samples.dat: per sample, the time (simulated minutes), then per
    backend: items/s over the last SMOOTH samples (simulated), slots busy
    and requests waiting inside the sim, the proxy's effective cap (NaN
    when no proxy is in use); throughput.png."""
    dat = os.path.join(out, "samples.dat")
    rs = sorted(sampler.rows, key=lambda r: r[0])
    smooth = 5  # 1 s of wall time, 10 s simulated: less jitter from the sampling
    with open(dat, "w") as f:
        f.write("# sim_minutes row " + " ".join(
            "%s_items_s %s_busy %s_waiting_inside %s_effective_cap" % (n, n, n, n)
            for n in names) + " total_items_s total_waiting_inside\n")
        for i in range(smooth, len(rs)):
            a, b = rs[i - smooth], rs[i]
            dt = (b[0] - a[0]) * scale
            cols, total, waiting = [], 0.0, 0
            for n in names:
                sa, sb = a[2].get(n), b[2].get(n)
                if sb and sa and sa[0] == sb[0]:
                    rate = (sb[1] - sa[1]) / dt
                    total += rate
                    cols += ["%.4f" % rate, "%d" % sb[2], "%d" % sb[3]]
                    waiting += sb[3]
                else:
                    cols += ["NaN", "%d" % sb[2] if sb else "NaN", "%d" % sb[3] if sb else "NaN"]
                cols.append("%d" % b[3][n][0] if b[3] and n in b[3] else "NaN")
            f.write("%.3f %s %s %.4f %d\n" % (b[0] * scale / 60, b[1] or "-", " ".join(cols),
                                               total, waiting))
    if not shutil.which("gnuplot"):
        print("gnuplot not found (.ci/install-deps demo installs it): no chart, data in " + dat)
        return None
    spans = ""
    for k, r in enumerate(rows):
        a, b = r["t0"] * scale / 60, r["t1"] * scale / 60
        spans += ('set object %d rect from %.3f, graph 0 to %.3f, graph 1 fc rgb "%s" '
                  'fs solid 0.12 noborder behind\n' % (k + 1, a, b, COLORS[k % len(COLORS)]))
        spans += ('set label %d "%s" at %.3f, graph 0.95 center front font ",10"\n' %
                  (k + 1, r["row"], (a + b) / 2))
    ymax = max([1.0] + [r.get("rate", 0) for r in rows] +
               [r["window"]["rate"] for r in rows if r.get("both")]) * 1.25
    script = """
set terminal pngcairo size 1200,820 font "DejaVu Sans,11"
set output "{png}"
set multiplot layout 2,1 title "The job on two simulated GPUs ({preset}), rows 1-7 (shaded)" font ",12"
set lmargin at screen 0.07
set rmargin at screen 0.76
set xrange [0:*]
set autoscale xfixmax
set grid ytics
set key outside right top
{spans}
set title "throughput per backend (items/s, simulated time)" font ",11"
set ylabel "items/s"
set yrange [0:{ymax:.2f}]
set arrow 1 from graph 0, first {job:.3f} to graph 1, first {job:.3f} nohead dt 3 lc rgb "#777777"
plot "{dat}" using 1:3 with lines lw 2 lc rgb "#cc3311" title "gpu0", \\
     "{dat}" using 1:7 with lines lw 2 lc rgb "#0077bb" title "gpu1", \\
     "{dat}" using 1:11 with lines lw 1 lc rgb "#333333" title "total", \\
     NaN with lines dt 3 lc rgb "#777777" title "row 1: {job:.2f}/s"

unset arrow 1
set title "slots: busy in each Ollama, the proxy's cap for it, and requests waiting inside Ollama" font ",11"
set xlabel "time (simulated minutes; the demo runs {scale:g}x faster)"
set ylabel "slots"
set yrange [0:{stop:d}]
set ytics 0,4,{stop:d} nomirror
set y2label "waiting inside Ollama"
set y2range [0:*]
set y2tics
plot "{dat}" using 1:6 with steps lw 7 lc rgb "#a0cc3311" title "gpu0: proxy's cap", \\
     "{dat}" using 1:10 with steps lw 7 lc rgb "#a00077bb" title "gpu1: proxy's cap", \\
     "{dat}" using 1:4 with lines lw 1.5 lc rgb "#661100" title "gpu0: slots busy", \\
     "{dat}" using 1:8 with lines lw 1.5 lc rgb "#003355" title "gpu1: slots busy", \\
     "{dat}" using 1:12 axes x1y2 with lines lw 1.5 dt 3 lc rgb "#555555" title "waiting inside (right)"
unset multiplot
""".format(png=os.path.join(out, "throughput.png"), preset=preset, spans=spans, ymax=ymax,
           job=job_rate, dat=dat, scale=scale, stop=2 * parallel + 4)
    return gnuplot(out, "throughput", script)


def write_shares(out, scale, sample_s, slots, sampler, run):
    """shares.dat: row 7's /proxy/status samples: time (simulated minutes
    since the batch started), each client's in flight and waiting, its
    items/s (simulated) from its served count over about 1 s of wall time
    around the sample, and the sum of the effective caps; shares.png."""
    dat = os.path.join(out, "shares.dat")
    rows = [r for r in sampler.rows if r[3] is not None and r[0] >= run["t0"] - 0.05 and
            r[0] <= run["t1"] + 0.05]
    names = ("legacy", "batch")
    half = max(1, int(round(0.5 / sample_s)))

    def get(row, n, k):
        return row[4][n][k] if n in row[4] else 0

    with open(dat, "w") as f:
        f.write("# sim_minutes legacy_in_flight legacy_waiting batch_in_flight batch_waiting "
                "legacy_items_s batch_items_s slots   (from /proxy/status, every %g s wall; "
                "items/s in simulated time)\n" % sample_s)
        for i, row in enumerate(rows):
            a, b = rows[max(0, i - half)], rows[min(len(rows) - 1, i + half)]
            dt = (b[0] - a[0]) * scale
            rates = [(get(b, n, 2) - get(a, n, 2)) / dt if dt > 0 else 0 for n in names]
            f.write("%.3f %d %d %d %d %.4f %.4f %d\n" % (
                (row[0] - run["t0"]) * scale / 60, get(row, "legacy", 0), get(row, "legacy", 1),
                get(row, "batch", 0), get(row, "batch", 1), rates[0], rates[1],
                sum(v[0] for v in row[3].values())))
    if not shutil.which("gnuplot"):
        return None
    L = run["legacy"]
    a, b = (L["t0"] - run["t0"]) * scale / 60, (L["t1"] - run["t0"]) * scale / 60
    xmax = (run["t1"] - run["t0"]) * scale / 60
    script = """
set terminal pngcairo size 1100,760 font "DejaVu Sans,11"
set output "{png}"
set multiplot layout 2,1 title "Row 7: ollama-classify -j 5 (key legacy) beside -j 200 (key batch), through the adaptive proxy" font ",12"
set lmargin at screen 0.07
set rmargin at screen 0.73
set xrange [0:{xmax:.3f}]
set grid ytics
set key outside right top
set object 1 rect from {a:.3f}, graph 0 to {b:.3f}, graph 1 fc rgb "#ee7733" fs solid 0.08 noborder behind
set label 1 "the legacy client runs ({nl} items)" at {mid:.3f}, graph 0.94 center front font ",9"

set title "slots in flight per client (stacked), and requests waiting in the proxy" font ",11"
set ylabel "slots in flight"
set yrange [0:{top:.1f}]
set ytics 0,4,{slots} nomirror
set y2label "requests waiting"
set y2range [0:240]
set y2tics
plot "{dat}" using 1:(0):2 with filledcurves fc rgb "#ee7733" fs solid 0.55 noborder title "legacy in flight", \\
     "{dat}" using 1:2:($2+$4) with filledcurves fc rgb "#228833" fs solid 0.45 noborder title "batch in flight", \\
     "{dat}" using 1:8 with steps lw 1.5 dt 2 lc rgb "#333333" title "effective caps, sum", \\
     "{dat}" using 1:5 axes x1y2 with lines lw 1.5 dt 2 lc rgb "#1b5e20" title "batch waiting (right)", \\
     "{dat}" using 1:3 axes x1y2 with lines lw 1.5 dt 2 lc rgb "#bf360c" title "legacy waiting (right)"

unset y2label
unset y2tics
set ytics auto mirror
set title "items/s per client (simulated time, from its served count at the proxy)" font ",11"
set xlabel "time since row 7 started (simulated minutes; the demo runs {scale:g}x faster)"
set ylabel "items/s"
set yrange [0:*]
plot "{dat}" using 1:6 with lines lw 2.5 lc rgb "#ee7733" title "legacy", \\
     "{dat}" using 1:7 with lines lw 2.5 lc rgb "#228833" title "batch", \\
     "{dat}" using 1:($6+$7) with lines lw 1 lc rgb "#333333" title "both"
unset multiplot
""".format(png=os.path.join(out, "shares.png"), nl=L["items"], xmax=xmax, a=a, b=b,
           mid=(a + b) / 2, slots=slots, top=slots * 1.4, dat=dat, scale=scale)
    return gnuplot(out, "shares", script)
