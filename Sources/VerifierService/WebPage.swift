import FoundationEssentials

/// The operator's page: plain HTML rendered by the service (it reads without JavaScript), with
/// a little inline JavaScript for the filter and live updates from `/v1/events`. No build
/// step, no external assets: the Content-Security-Policy allows nothing from elsewhere.
public enum WebPage {
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    static func time(_ t: Double?) -> String {
        guard let t else { return "—" }
        return "<time datetime=\"\(Timestamp.iso(t))\">\(escape(Timestamp.iso(t)))</time>"
    }

    static func badge(_ v: FleetVerdict) -> String {
        "<span class=\"v v-\(v.rawValue)\" data-verdict=\"\(v.rawValue)\">\(v.rawValue.uppercased())</span>"
    }

    static let style = """
        body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
        header{background:#1b2b3a;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
        header h1{font-size:18px;margin:0}header a{color:#cfe3ff}
        main{padding:14px 18px}
        .counts span{margin-right:10px}
        table{border-collapse:collapse;width:100%;background:#fff}
        th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
        th{background:#eef1f4;font-weight:600}
        .v{display:inline-block;min-width:86px;text-align:center;border-radius:3px;padding:1px 6px;font-size:12px;font-weight:700;color:#fff}
        .v-trusted{background:#2e7d32}.v-untrusted{background:#c62828}.v-failed{background:#ad1457}
        .v-unreachable{background:#6d4c41}.v-unknown{background:#f9a825;color:#222}.v-pending{background:#78909c}
        .vm{display:inline-block;margin:1px 6px 1px 0;white-space:nowrap}
        .reason{color:#555;font-size:12px;max-width:48em}
        .filter{margin:10px 0;display:flex;gap:8px;align-items:center}
        .filter input{padding:4px 6px;width:22em}
        .mono{font-family:ui-monospace,monospace;font-size:12px}
        details{margin:4px 0}pre{white-space:pre-wrap;word-break:break-all;background:#f3f4f6;padding:6px;margin:4px 0}
        .live{font-size:12px;color:#cfe3ff}
        .changed{outline:2px solid #ffb300}
        """

    static func shell(title: String, body: String, script: String) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
        <title>\(escape(title))</title><style>\(style)</style></head>
        <body>
        <header><h1>vmv-verifier</h1><a href="/">fleet</a><span id="live" class="live" data-state="connecting">live: connecting…</span></header>
        <main>
        \(body)
        </main>
        <script>\(script)</script>
        </body></html>
        """
    }

    /// Marks the page live while the event stream is open; on a change, flags the row.
    /// `#live=off` keeps the stream closed (a page printed or read by a headless tool whose
    /// virtual clock would wait for the endless stream).
    static let liveScript = """
        (function(){
          var live=document.getElementById('live');
          if(!window.EventSource){live.textContent='live: unsupported';return;}
          if(/(?:^#|&)live=off/.test(location.hash)){live.dataset.state='off';live.textContent='live: off';return;}
          var es=new EventSource('/v1/events');
          es.onopen=function(){live.dataset.state='open';live.textContent='live: connected';};
          es.onerror=function(){live.dataset.state='retrying';live.textContent='live: reconnecting…';};
          es.addEventListener('verdict',function(e){
            var c=JSON.parse(e.data);
            var row=document.querySelector('tr[data-host="'+CSS.escape(c.host)+'"]');
            if(row){row.classList.add('changed');
              if(c.subject==='host'){var b=row.querySelector('.hv .v');if(b){b.className='v v-'+c.verdict;b.dataset.verdict=c.verdict;b.textContent=c.verdict.toUpperCase();}
                row.dataset.verdict=c.verdict;}}
            var log=document.getElementById('recent');
            if(log){var li=document.createElement('li');
              li.textContent=new Date(c.at*1000).toISOString()+' '+c.host+(c.vmName?' / '+c.vmName:'')+': '+(c.previous||'-')+' → '+c.verdict+(c.reasons.length?' — '+c.reasons[0]:'');
              log.insertBefore(li,log.firstChild);}
          });
        })();
        """

    /// Filters rows by text (host, URL, VM names, reasons) and verdict, as you type; the URL's
    /// `?q=` sets the text (the server applies it too, for a page read without JavaScript) and
    /// `#state=VERDICT` the verdict.
    static let filterScript = """
        (function(){
          var q=document.getElementById('q'),s=document.getElementById('state'),n=document.getElementById('shown');
          function apply(){var t=q.value.toLowerCase(),st=s.value,c=0;
            document.querySelectorAll('tbody tr[data-host]').forEach(function(r){
              var ok=(!t||r.dataset.text.indexOf(t)>=0)&&(!st||r.dataset.verdict===st||(r.dataset.vms||'').indexOf(' '+st+' ')>=0);
              r.hidden=!ok;if(ok)c++;});
            n.textContent=c;}
          var m=/(?:^#|&)state=([a-z]+)/.exec(location.hash);if(m)s.value=m[1];
          q.addEventListener('input',apply);s.addEventListener('change',apply);apply();
          document.body.dataset.filtered='yes';
        })();
        """

    public static func overview(_ status: FleetStatus, filter: String) -> String {
        let needle = filter.lowercased()
        var rows = ""
        var shown = 0
        for h in status.hosts {
            let text = ([h.name, h.url, h.verdict.rawValue] + h.vms.compactMap(\.name) + h.vms.map(\.uuid) + h.reasons).joined(separator: " ").lowercased()
            if !needle.isEmpty && !text.contains(needle) { continue }
            shown += 1
            let vms = h.vms.isEmpty ? "<span class=\"reason\">none known</span>" : h.vms.map { vm in
                "<span class=\"vm\" data-vm=\"\(escape(vm.uuid))\">\(badge(vm.verdict)) \(escape(vm.name ?? vm.uuid))\(vm.running ? "" : " (stopped)")</span>"
            }.joined(separator: " ")
            let vmStates = " " + h.vms.map(\.verdict.rawValue).joined(separator: " ") + " "
            rows += """
                <tr data-host="\(escape(h.name))" data-verdict="\(h.verdict.rawValue)" data-vms="\(vmStates)" data-text="\(escape(text))">
                <td><a href="/hosts/\(escape(h.name))">\(escape(h.name))</a><div class="mono">\(escape(h.url))</div></td>
                <td class="hv">\(badge(h.verdict))<div class="reason">since \(time(h.verdictSince))</div></td>
                <td>\(vms)</td>
                <td>\(time(h.lastAttempt))\(h.leaseOwner.map { "<div class=\"reason\">now: \(escape($0))</div>" } ?? "")</td>
                <td class="reason">\(escape(h.reasons.first ?? ""))\(h.reasons.count > 1 ? " (+\(h.reasons.count - 1) more)" : "")</td>
                </tr>

                """
        }
        let counts = FleetVerdict.allCases.map { v in
            "<span>\(badge(v)) <b data-count=\"\(v.rawValue)\">\(status.counts[v.rawValue] ?? 0)</b></span>"
        }.joined()
        let options = ([""] + FleetVerdict.allCases.map(\.rawValue)).map { "<option value=\"\($0)\">\($0.isEmpty ? "any verdict" : $0)</option>" }.joined()
        let body = """
            <p class="counts">\(counts) <span>hosts: <b id="total">\(status.hosts.count)</b></span> <span class="reason">as of \(time(status.generatedAt))</span></p>
            <form class="filter" method="get" action="/"><label>Filter <input id="q" name="q" value="\(escape(filter))" placeholder="host, VM, reason…" autocomplete="off"></label>
            <select id="state" aria-label="verdict">\(options)</select> <span>shown: <b id="shown">\(shown)</b></span></form>
            <table id="hosts"><thead><tr><th>host</th><th>verdict</th><th>VMs</th><th>last attested</th><th>reason</th></tr></thead>
            <tbody>
            \(rows)</tbody></table>
            <h3>changes while this page is open</h3><ul id="recent" class="mono"></ul>
            """
        return shell(title: "vmv-verifier: fleet", body: body, script: filterScript + liveScript)
    }

    public static func host(_ h: HostStatus, changes: [VerdictChange]) -> String {
        var vmRows = ""
        for vm in h.vms {
            vmRows += """
                <tr data-vm="\(escape(vm.uuid))" data-verdict="\(vm.verdict.rawValue)"><td>\(escape(vm.name ?? "—"))<div class="mono">\(escape(vm.uuid))</div></td>
                <td>\(vm.domid.map(String.init) ?? "—")\(vm.running ? "" : " (stopped)")</td><td>\(badge(vm.verdict))</td><td>\(time(vm.since))</td>
                <td class="reason">\(vm.reasons.map(escape).joined(separator: "<br>"))</td></tr>

                """
        }
        // The timeline, newest first, per subject: the host's own changes and each VM's.
        var timeline = ""
        for c in changes.reversed() {
            let subject = c.subject == .host ? "host" : "VM \(c.vmName ?? c.vmUUID ?? "?")"
            var details = ""
            if !c.evidence.failedChecks.isEmpty {
                details += "<p>failed checks:</p><ul>" + c.evidence.failedChecks.map { "<li><b>\(escape($0.rule))</b>: \(escape($0.reason))</li>" }.joined() + "</ul>"
            }
            if !c.evidence.facts.isEmpty {
                details += "<table class=\"mono\"><thead><tr><th>record(s)</th><th>what</th><th>value</th><th>result</th><th>expected</th></tr></thead><tbody>"
                    + c.evidence.facts.map { f in
                        "<tr><td>seq \(f.firstSeq)\(f.lastSeq != f.firstSeq ? "–\(f.lastSeq)" : "")</td><td>\(escape(f.label))</td><td>\(escape(f.value))</td><td>\(escape(f.result))</td><td>\(escape(f.expected.joined(separator: ", ")))</td></tr>"
                    }.joined() + "</tbody></table>"
            }
            if !c.evidence.records.isEmpty {
                details += "<details><summary>\(c.evidence.records.count) log record(s) of this attestation (epoch \(c.evidence.epoch.map(String.init) ?? "?"))</summary>"
                    + c.evidence.records.map { "<pre>\(escape($0))</pre>" }.joined() + "</details>"
            }
            timeline += """
                <li class="change" data-change="\(c.id)" data-subject="\(escape(c.vmUUID ?? "host"))"><div>\(time(c.at)) <b>\(escape(subject))</b>:
                \(c.previous.map(badge) ?? "—") → \(badge(c.verdict)) <span class="reason">by \(escape(c.owner))</span></div>
                <div class="reason">\(c.reasons.map(escape).joined(separator: "<br>"))</div>\(details)</li>

                """
        }
        let subjects = (["host"] + h.vms.map { $0.uuid }).map { s -> String in
            let label = s == "host" ? "host" : (h.vms.first { $0.uuid == s }?.name ?? s)
            return "<option value=\"\(escape(s))\">\(escape(label))</option>"
        }.joined()
        let body = """
            <h2 data-host="\(escape(h.name))">\(escape(h.name)) \(badge(h.verdict))</h2>
            <p class="mono">\(escape(h.url)) · reference set \(escape(h.referenceSet)) · AK \(escape(h.akName.map { String($0.prefix(24)) + "…" } ?? "via AK CA"))
            · last attempt \(time(h.lastAttempt)) · last sound attestation \(time(h.lastSuccess)) · next due \(time(h.nextDue))</p>
            <p class="reason">\(h.reasons.map(escape).joined(separator: "<br>"))</p>
            <h3>VMs</h3>
            <table id="vms"><thead><tr><th>VM</th><th>domid</th><th>verdict</th><th>since</th><th>reasons</th></tr></thead><tbody>
            \(vmRows)</tbody></table>
            <h3>timeline</h3>
            <p class="filter"><label>subject <select id="subject"><option value="">all</option>\(subjects)</select></label></p>
            <ol id="timeline" reversed>
            \(timeline)</ol>
            """
        let script = """
            (function(){var s=document.getElementById('subject');s.addEventListener('change',function(){
              document.querySelectorAll('#timeline li.change').forEach(function(li){li.hidden=!!s.value&&li.dataset.subject!==s.value;});});})();
            """
        return shell(title: "vmv-verifier: \(h.name)", body: body, script: script + liveScript)
    }
}
