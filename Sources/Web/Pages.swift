import Foundation
import Queue
import Store
import Webhooks

/// The dashboard's server-rendered pages: plain HTML with a small stylesheet, inline SVG, and a little script
/// that polls the JSON API to move running jobs' progress bars and sends actions with the bearer token.
/// Everything that comes from the database or the request is escaped.
enum Pages {
    static func layout(title: String, active: String, csrf: String, writable: Bool, body: String) -> String {
        let nav = [("queue", "/queue", "Queue"), ("models", "/models", "Registry"), ("samples", "/samples", "Samples & predictors"), ("webhooks", "/webhooks", "Webhooks")]
            .map { "<a href=\"\($0.1)\"\($0.0 == active ? " class=\"active\"" : "")>\($0.2)</a>" }.joined()
        return """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>\(HTML.escape(title)) · lop</title>
        <meta name="csrf-token" content="\(HTML.escape(csrf))"><meta name="lop-writable" content="\(writable)">
        <style>
        body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
        header{background:#1d232a;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:center}
        header b{font-size:16px;margin-right:12px} header a{color:#c9d1d9;text-decoration:none} header a.active{color:#fff;border-bottom:2px solid #58a6ff}
        main{padding:16px 20px;max-width:1200px} h1{font-size:20px;margin:4px 0 12px} h2{font-size:16px;margin:18px 0 8px}
        table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:12px} th,td{border:1px solid #e1e4e8;padding:4px 8px;text-align:left;vertical-align:top}
        th{background:#f0f2f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
        .bar{background:#e1e4e8;height:12px;width:160px;border-radius:3px;overflow:hidden;display:inline-block;vertical-align:middle}
        .bar>span{display:block;height:100%;background:#2f81f7}
        .state{padding:1px 6px;border-radius:8px;font-size:12px;background:#e1e4e8} .state.completed,.state.delivered{background:#d1f0d9}
        .state.discarded,.state.dead,.state.failed,.state.cancelled{background:#f8d7da} .state.running{background:#cfe3ff}
        pre{background:#fff;border:1px solid #e1e4e8;padding:8px;overflow:auto;max-height:320px;white-space:pre-wrap;word-break:break-all}
        .empty{color:#6a737d} form.inline{display:inline} button{font-size:12px}
        </style></head><body>
        <header><b>lop</b>\(nav)<span style="margin-left:auto;font-size:12px">\(writable ? "actions need the token" : "read-only")</span></header>
        <main>\(body)</main>
        <script>
        async function lopAction(path, body) {
          let token = sessionStorage.getItem('lop-token') || prompt('Bearer token (LOP_WEB_TOKEN)');
          if (!token) return;
          sessionStorage.setItem('lop-token', token);
          const csrf = document.querySelector('meta[name=csrf-token]').content;
          const r = await fetch(path, {method: 'POST', headers: {'Authorization': 'Bearer ' + token, 'X-CSRF-Token': csrf, 'Content-Type': 'application/json'}, body: JSON.stringify(body || {})});
          if (r.status === 401) sessionStorage.removeItem('lop-token');
          alert(r.status + ' ' + (await r.text()));
          if (r.ok) location.reload();
        }
        </script>
        </body></html>
        """
    }

    static func e(_ s: String?) -> String { HTML.escape(s ?? "") }
    static func date(_ d: Date?) -> String { d.map { ISO8601DateFormatter().string(from: $0) } ?? "" }
    static func state(_ s: String) -> String { "<span class=\"state \(e(s))\">\(e(s))</span>" }
    static func bar(_ job: Job) -> String {
        let percent = String(format: "%.1f", job.progress * 100)
        return "<span class=\"bar\" data-job=\"\(job.id)\" data-seen=\"\(percent)\"><span style=\"width:\(percent)%\"></span></span> <span class=\"pct\" data-job=\"\(job.id)\">\(percent) %</span>"
    }
    /// A stored JSON document, indented for reading (as stored when it does not parse).
    static func json(_ value: JSONB?) -> String {
        guard let value else { return "" }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let parsed = try? value.decode(AnyJSON.self), let pretty = try? encoder.encode(parsed) else { return e(value.text) }
        return e(String(decoding: pretty, as: UTF8.self))
    }

    // MARK: Queue

    static func queue(_ v: DashboardData.QueueView) -> String {
        let states = JobState.allCases.map(\.rawValue), kinds = Array(Set(v.counts.map(\.kind))).sorted()
        var counts = "<table id=\"counts\"><tr><th>kind</th>" + states.map { "<th>\($0)</th>" }.joined() + "</tr>"
        for kind in kinds {
            counts += "<tr><td>\(e(kind))</td>" + states.map { s in
                let n = v.counts.first { $0.kind == kind && $0.state == s }?.count ?? 0
                return "<td class=\"num\">\(n == 0 ? "" : "<a href=\"/queue?state=\(s)&amp;kind=\(e(kind))\">\(n)</a>")</td>"
            }.joined() + "</tr>"
        }
        counts += "</table>"
        let running = v.running.isEmpty ? "<p class=\"empty\">Nothing is running.</p>" : "<table id=\"running\"><tr><th>job</th><th>kind</th><th>progress</th><th>stage</th><th>message</th><th>worker</th></tr>" + v.running.map { j in
            "<tr data-job=\"\(j.id)\"><td><a href=\"/jobs/\(j.id)\">#\(j.id)</a></td><td>\(e(j.kind.rawValue))</td><td>\(bar(j))</td><td class=\"stage\" data-job=\"\(j.id)\">\(e(j.progressStage))</td><td class=\"message\" data-job=\"\(j.id)\">\(e(j.progressMessage))</td><td>\(e(j.attemptedBy))</td></tr>"
        }.joined() + "</table>"
        let failed = v.failed.isEmpty ? "<p class=\"empty\">No failed jobs.</p>" : "<table id=\"failed\"><tr><th>job</th><th>kind</th><th>state</th><th>attempts</th><th>last error</th></tr>" + v.failed.map { j in
            "<tr><td><a href=\"/jobs/\(j.id)\">#\(j.id)</a></td><td>\(e(j.kind.rawValue))</td><td>\(state(j.state.rawValue))</td><td class=\"num\">\(j.attempt)/\(j.maxAttempts)</td><td>\(e(j.errors.last?.error))</td></tr>"
        }.joined() + "</table>"
        let f = v.filter
        let options = { (name: String, values: [String], chosen: String?) in
            "<select name=\"\(name)\"><option value=\"\">any \(name)</option>" + values.map { "<option\($0 == chosen ? " selected" : "")>\(e($0))</option>" }.joined() + "</select>"
        }
        let filter = "<form method=\"get\" action=\"/queue\">" + options("state", states, f.state?.rawValue) + " " + options("kind", JobKind.allCases.map(\.rawValue), f.kind?.rawValue)
            + " <input name=\"queue\" placeholder=\"queue\" value=\"\(e(f.queue))\"> <button>filter</button></form>"
        let jobs = "<table id=\"jobs\"><tr><th>job</th><th>kind</th><th>queue</th><th>state</th><th>progress</th><th>created</th><th>finished</th></tr>" + v.jobs.map { j in
            "<tr><td><a href=\"/jobs/\(j.id)\">#\(j.id)</a></td><td>\(e(j.kind.rawValue))</td><td>\(e(j.queue))</td><td>\(state(j.state.rawValue))</td><td>\(bar(j))</td><td>\(date(j.createdAt))</td><td>\(date(j.finalizedAt))</td></tr>"
        }.joined() + "</table>"
        let poll = """
        <script>
        // Running jobs' bars follow the API without a reload; data-seen keeps every width shown.
        setInterval(async () => {
          const r = await fetch('/api/queue?state=running'); if (!r.ok) return;
          const v = await r.json();
          for (const j of v.running) {
            const pct = (j.progress * 100).toFixed(1);
            for (const el of document.querySelectorAll('.bar[data-job="' + j.id + '"]')) {
              el.firstElementChild.style.width = pct + '%';
              if (!el.dataset.seen.split(',').includes(pct)) el.dataset.seen += ',' + pct;
            }
            for (const el of document.querySelectorAll('.pct[data-job="' + j.id + '"]')) el.textContent = pct + ' %';
            for (const el of document.querySelectorAll('.stage[data-job="' + j.id + '"]')) el.textContent = j.progressStage || '';
            for (const el of document.querySelectorAll('.message[data-job="' + j.id + '"]')) el.textContent = j.progressMessage || '';
          }
        }, 500);
        </script>
        """
        return "<h1>Queue</h1><h2>Jobs by state and kind</h2>\(counts)<h2>Running</h2>\(running)<h2>Failed and retrying</h2>\(failed)<h2>Jobs</h2>\(filter)\(jobs)\(poll)"
    }

    static func job(_ v: DashboardData.JobView) -> String {
        let j = v.job
        var facts: [(String, String)] = [("queue", e(j.queue)), ("priority", "\(j.priority)"), ("attempts", "\(j.attempt) of \(j.maxAttempts)")]
        facts += [("progress", bar(j)), ("stage", e(j.progressStage)), ("message", e(j.progressMessage)), ("worker", e(j.attemptedBy))]
        facts += [("created", date(j.createdAt)), ("scheduled", date(j.scheduledAt)), ("attempted", date(j.attemptedAt)), ("finished", date(j.finalizedAt))]
        facts.append(("parent", j.parentId.map { "<a href=\"/jobs/\($0)\">#\($0)</a>" } ?? ""))
        facts.append(("unique key", e(j.uniqueKey)))
        var html = "<h1>Job #\(j.id) · \(e(j.kind.rawValue)) \(state(j.state.rawValue))</h1><table id=\"job\">"
        for (k, value) in facts { html += "<tr><th>\(k)</th><td>\(value)</td></tr>" }
        html += "</table>"
        html += "<p><button onclick=\"lopAction('/api/jobs/\(j.id)/cancel')\">cancel</button> <button onclick=\"lopAction('/api/jobs/\(j.id)/retry')\">retry</button></p>"
        html += "<h2>Args</h2><pre id=\"args\">\(json(j.args))</pre><h2>Result</h2><pre id=\"result\">\(json(j.result))</pre>"
        html += "<h2>Errors</h2>" + (j.errors.isEmpty ? "<p class=\"empty\">None.</p>" : "<table id=\"errors\"><tr><th>attempt</th><th>at</th><th>worker</th><th>error</th></tr>" + j.errors.map {
            "<tr><td class=\"num\">\($0.attempt)</td><td>\(e($0.at))</td><td>\(e($0.worker))</td><td><pre>\(e($0.error))</pre></td></tr>"
        }.joined() + "</table>")
        if !v.children.isEmpty {
            html += "<h2>Children</h2><table id=\"children\"><tr><th>job</th><th>kind</th><th>state</th><th>progress</th></tr>" + v.children.map { c in
                "<tr><td><a href=\"/jobs/\(c.id)\">#\(c.id)</a></td><td>\(e(c.kind.rawValue))</td><td>\(state(c.state.rawValue))</td><td>\(bar(c))</td></tr>"
            }.joined() + "</table>"
        }
        return html
    }

    // MARK: Registry

    /// A predictor's held-out losses by budget, `0.35: 1.2345, 0.6: …`.
    static func losses(_ predictor: RegisteredModel) -> String {
        DashboardData.predictedLosses(predictor).sorted { $0.key < $1.key }.map { "\($0.key): \(String(format: "%.4f", $0.value))" }.joined(separator: ", ")
    }

    static func metrics(_ m: RegisteredModel) -> String { DashboardData.heldOutLoss(m).map { String(format: "%.4f", $0) } ?? "" }
    static func size(_ bytes: Int64) -> String { String(format: "%.2f MB", Double(bytes) / 1e6) }

    static func registry(_ bases: [DashboardData.BaseEntry], order: DashboardData.VariantOrder) -> String {
        guard !bases.isEmpty else { return "<h1>Registry</h1><p class=\"empty\">No models are registered.</p>" }
        var html = "<h1>Registry</h1><p>Variants by: " + DashboardData.VariantOrder.allCases.map {
            $0 == order ? "<b>\($0.rawValue)</b>" : "<a href=\"/models?sort=\($0.rawValue)\">\($0.rawValue)</a>"
        }.joined(separator: " · ") + "</p>"
        for entry in bases {
            let b = entry.base
            html += "<h2><a href=\"/models/\(b.id)\">\(e(b.reference))</a> · \(b.parameters) parameters · \(size(b.sizeBytes)) · held-out loss \(metrics(b))</h2>"
            html += entry.variants.isEmpty ? "<p class=\"empty\">No variants yet.</p>" : "<table class=\"variants\" data-base=\"\(b.id)\"><tr><th>variant</th><th>budget</th><th>method</th><th>parameters</th><th>size</th><th>held-out loss</th><th>created</th></tr>" + entry.variants.map { v in
                "<tr><td><a href=\"/models/\(v.id)\">\(e(v.reference))</a></td><td>\(e(v.budget?.description))</td><td>\(e(v.method))</td><td class=\"num\">\(v.parameters)</td><td class=\"num\">\(size(v.sizeBytes))</td><td class=\"num\">\(metrics(v))</td><td>\(date(v.createdAt))</td></tr>"
            }.joined() + "</table>"
        }
        return html
    }

    static func model(_ v: DashboardData.ModelView) -> String {
        let m = v.model
        var facts: [(String, String)] = [("parameters", "\(m.parameters)"), ("size", size(m.sizeBytes)), ("held-out loss", metrics(m))]
        facts.append(("budget", e(m.budget?.description)))
        facts.append(("method", e(m.method)))
        facts.append(("base", v.base.map { "<a href=\"/models/\($0.id)\">\(e($0.reference))</a>" } ?? ""))
        facts.append(("predictor", m.predictorId.map { "<a href=\"/models/\($0)\">model \($0)</a>" } ?? ""))
        facts.append(("job", m.sourceJobId.map { "<a href=\"/jobs/\($0)\">#\($0)</a>" } ?? ""))
        facts.append(("samples in its lineage", "\(v.lineageSamples)"))
        facts += [("held-out data", e(m.evalData)), ("calibration", e(m.calibration)), ("content hash", e(m.contentHash)), ("created", date(m.createdAt))]
        var html = "<h1>\(e(m.reference)) · \(e(m.kind.rawValue))</h1><table id=\"model\">"
        for (k, value) in facts { html += "<tr><th>\(k)</th><td>\(value)</td></tr>" }
        html += "</table>"
        if let chart = v.chart { html += "<h2>Loss against kept fraction</h2><div id=\"chart\">\(ChartSVG.render(chart))</div>" }
        html += "<h2>Files</h2><table id=\"files\"><tr><th>file</th><th>bytes</th><th>SHA-256</th></tr>" + m.files.keys.sorted().map { name in
            "<tr><td>\(e(name))</td><td class=\"num\">\(m.files[name]!.bytes)</td><td><code>\(e(m.files[name]!.sha256))</code></td></tr>"
        }.joined() + "</table>"
        html += "<h2>Lineage</h2><pre id=\"lineage\">\(json(m.lineage))</pre>"
        html += "<h2>Aliases</h2>" + (v.aliases.isEmpty ? "<p class=\"empty\">None.</p>" : "<table id=\"aliases\"><tr><th>alias</th><th>version</th><th>since</th></tr>" + v.aliases.map {
            "<tr><td>\(e($0.alias))</td><td>\($0.version)</td><td>\(date($0.updatedAt))</td></tr>"
        }.joined() + "</table>")
        html += "<p><button onclick=\"(() => { const a = prompt('alias'); if (a) lopAction('/api/models/\(m.id)/alias', {alias: a}); })()\">point an alias here</button></p>"
        html += "<h2>Alias history</h2>" + (v.aliasHistory.isEmpty ? "<p class=\"empty\">None.</p>" : "<table id=\"alias-history\"><tr><th>when</th><th>alias</th><th>to</th><th>from</th><th>by</th><th>reason</th></tr>" + v.aliasHistory.map {
            "<tr><td>\(date($0.changedAt))</td><td>\(e($0.alias))</td><td>\($0.modelId.map(String.init) ?? "")</td><td>\($0.previousModelId.map(String.init) ?? "")</td><td>\(e($0.changedBy))</td><td>\(e($0.reason))</td></tr>"
        }.joined() + "</table>")
        if !v.evaluations.isEmpty {
            html += "<h2>Evaluations</h2><table id=\"evaluations\"><tr><th>data</th><th>metrics</th><th>when</th></tr>" + v.evaluations.map {
                "<tr><td>\(e($0.data))</td><td><code>\(e($0.metrics.text))</code></td><td>\(date($0.evaluatedAt))</td></tr>"
            }.joined() + "</table>"
        }
        if !v.predictors.isEmpty {
            html += "<h2>Predictors</h2><table id=\"predictors\"><tr><th>predictor</th><th>held-out losses</th></tr>" + v.predictors.map { p in
                "<tr><td><a href=\"/models/\(p.id)\">\(e(p.reference))</a></td><td>\(e(losses(p)))</td></tr>"
            }.joined() + "</table>"
        }
        return html
    }

    // MARK: Samples and predictors

    static func samples(_ v: DashboardData.SamplesView) -> String {
        var html = "<h1>Samples and predictors</h1><h2>Samples per base model and budget</h2>"
        html += v.counts.isEmpty ? "<p class=\"empty\">No samples yet.</p>" : "<table id=\"sample-counts\"><tr><th>model</th><th>hash</th><th>budget</th><th>samples</th><th>best loss</th></tr>" + v.counts.map {
            "<tr><td>\(e($0.model))</td><td><code>\(e(String($0.modelHash.prefix(12))))</code></td><td>\(e($0.budget))</td><td class=\"num\">\($0.count)</td><td class=\"num\">\(String(format: "%.4f", $0.bestLoss))</td></tr>"
        }.joined() + "</table>"
        html += "<h2>Predictors</h2>" + (v.predictors.isEmpty ? "<p class=\"empty\">No predictors yet.</p>" : "<table id=\"predictor-versions\"><tr><th>predictor</th><th>base</th><th>held-out losses</th><th>created</th></tr>" + v.predictors.map { p in
            "<tr><td><a href=\"/models/\(p.id)\">\(e(p.reference))</a></td><td>\(p.baseModelId.map { "<a href=\"/models/\($0)\">model \($0)</a>" } ?? "")</td><td>\(e(losses(p)))</td><td>\(date(p.createdAt))</td></tr>"
        }.joined() + "</table>")
        html += "<h2>Promotion history</h2>" + (v.promotions.isEmpty ? "<p class=\"empty\">No promotions yet.</p>" : "<table id=\"promotions\"><tr><th>when</th><th>predictor</th><th>alias</th><th>to</th><th>from</th><th>reason</th></tr>" + v.promotions.map {
            "<tr><td>\(date($0.changedAt))</td><td>\(e($0.name))</td><td>\(e($0.alias))</td><td>\($0.modelId.map(String.init) ?? "")</td><td>\($0.previousModelId.map(String.init) ?? "")</td><td>\(e($0.reason))</td></tr>"
        }.joined() + "</table>")
        return html
    }

    // MARK: Webhooks

    static func webhooks(_ v: DashboardData.WebhooksView) -> String {
        var html = "<h1>Webhooks</h1><h2>Endpoints</h2>"
        html += v.endpoints.isEmpty ? "<p class=\"empty\">No endpoints.</p>" : "<table id=\"endpoints\"><tr><th>id</th><th>url</th><th>events</th><th>enabled</th></tr>" + v.endpoints.map {
            "<tr><td>\($0.id)</td><td>\(e($0.url))</td><td>\(e($0.events.isEmpty ? "all" : $0.events.joined(separator: ", ")))</td><td>\($0.enabled ? "yes" : "no: " + e($0.disabledReason))</td></tr>"
        }.joined() + "</table>"
        html += "<h2>Deliveries</h2>" + (v.deliveries.isEmpty ? "<p class=\"empty\">No deliveries.</p>" : "<table id=\"deliveries\"><tr><th>delivery</th><th>endpoint</th><th>event</th><th>state</th><th>attempts</th><th>last error</th><th>created</th><th></th></tr>" + v.deliveries.map { d in
            "<tr><td><a href=\"/webhooks/deliveries/\(e(d.id))\">\(e(d.id))</a></td><td>\(d.endpointId)</td><td>\(e(d.eventType))</td><td>\(state(d.state))</td><td class=\"num\">\(d.attempt)</td><td>\(e(d.lastError))</td><td>\(date(d.createdAt))</td><td><button onclick=\"lopAction('/api/webhooks/deliveries/\(e(d.id))/redeliver')\">redeliver</button></td></tr>"
        }.joined() + "</table>")
        return html
    }

    static func delivery(_ v: DashboardData.DeliveryView) -> String {
        let d = v.delivery
        var html = "<h1>Delivery \(e(d.id)) \(state(d.state))</h1><table id=\"delivery\">"
        for (k, value) in [("endpoint", "\(d.endpointId)"), ("event", e(d.eventType)), ("attempts", "\(d.attempt)"), ("next attempt", date(d.nextAttemptAt)),
                           ("delivered", date(d.deliveredAt)), ("last error", e(d.lastError))] {
            html += "<tr><th>\(k)</th><td>\(value)</td></tr>"
        }
        html += "</table><h2>Attempts</h2>" + (v.attempts.isEmpty ? "<p class=\"empty\">None yet.</p>" : "<table id=\"attempts\"><tr><th>attempt</th><th>notifier</th><th>started</th><th>ms</th><th>status</th><th>error</th></tr>" + v.attempts.map {
            "<tr><td class=\"num\">\($0.attempt)</td><td>\(e($0.notifier))</td><td>\(date($0.startedAt))</td><td class=\"num\">\(String(format: "%.1f", $0.durationMs))</td><td>\($0.statusCode.map(String.init) ?? "")</td><td>\(e($0.error))</td></tr>"
        }.joined() + "</table>")
        html += "<p><button onclick=\"lopAction('/api/webhooks/deliveries/\(e(d.id))/redeliver')\">redeliver</button></p>"
        return html
    }

    static func notFound(_ what: String) -> String { "<h1>Not found</h1><p>\(e(what))</p>" }
}
