/* sdlab lab pages (overview, instruments, alarms, approvals, users): the server renders
   them; this script sends the buttons' requests to the JSON API, says what happened in
   words, and redraws the page's tables from a fresh copy of the page. Needs app.js first. */
"use strict";
(() => {
  const { api, say, words, follow } = sdlab;

  /* replace the elements with these ids by their fresh copies from the server */
  async function redraw(ids) {
    const res = await fetch(window.location.href, { credentials: "same-origin" });
    if (!res.ok) return;
    const doc = new DOMParser().parseFromString(await res.text(), "text/html");
    for (const id of ids) {
      const now = document.getElementById(id), fresh = doc.getElementById(id);
      if (now && fresh) now.replaceWith(document.importNode(fresh, true));
    }
    wire();
  }

  /* the overview and the instruments page refresh themselves, unless the operator is typing */
  function autoRefresh() {
    const live = document.getElementById("live");
    if (!live || !live.dataset.refreshS) return;
    setInterval(() => {
      const busy = [...live.querySelectorAll("input")].some((i) => i.value || i === document.activeElement);
      if (!busy && !document.hidden) redraw(["live"]);
    }, 1000 * Number(live.dataset.refreshS));
  }

  async function command(method, url, body, what, ids) {
    const r = await api(method, url, body);
    if (r.status === 202 && r.data && r.data.command_id) {
      say("Sent: " + what + "; waiting for the controller to apply it...");
      const done = await follow(r.data, what);
      await redraw(ids);  // the answer comes once the page shows its effect
      say(done.text, !done.ok);
      return done.ok;
    }
    if (!r.ok) { say("Refused: " + words(r) + ".", true); return false; }
    return true;
  }

  function on(selector, handler) {
    for (const b of document.querySelectorAll(selector)) {
      if (b.dataset.wired) continue;
      b.dataset.wired = "yes";
      b.addEventListener("click", (ev) => { ev.preventDefault(); handler(b, b.closest("tr")); });
    }
  }

  /* ------------------------------------------------------------------ instruments */
  function instruments() {
    on(".btn-out", (b, tr) => {
      const name = tr.dataset.name;
      const reason = tr.querySelector(".oos-reason").value.trim();
      if (!reason) { say("Type why " + name + " goes out of service first.", true); return; }
      if (!window.confirm("Take " + name + " out of service? It gets no new steps until put back.")) return;
      command("POST", b.dataset.url, { reason }, name + " out of service", ["live"]);
    });
    on(".btn-in", (b, tr) => {
      command("POST", b.dataset.url, undefined, tr.dataset.name + " back in service", ["live"]);
    });
  }

  /* ------------------------------------------------------------------ alarms */
  function alarms() {
    on(".btn-ack", async (b, tr) => {
      const note = tr.querySelector(".ack-note").value.trim();
      const r = await api("POST", b.dataset.url, { note });
      if (r.ok) {
        await redraw(["live"]);
        say("Alarm " + r.data.alarm_id + " acknowledged by " + r.data.by + " at " + sdlab.when(r.data.at) + ".");
      } else say("Refused: " + words(r) + ".", true);
    });
  }

  /* ------------------------------------------------------------------ approvals */
  function picked() {
    const byCampaign = new Map();
    for (const box of document.querySelectorAll("#approvals input.pick:checked")) {
      const c = Number(box.dataset.campaign);
      if (!byCampaign.has(c)) byCampaign.set(c, []);
      byCampaign.get(c).push(Number(box.value));
    }
    return byCampaign;
  }

  async function decide(verb, reason) {
    const byCampaign = picked();
    const n = [...byCampaign.values()].reduce((a, ids) => a + ids.length, 0);
    if (!n) { say("Select the proposals to " + verb + " first.", true); return; }
    if (verb === "reject") {
      if (!reason) { say("Type why you reject them first.", true); return; }
      if (!window.confirm("Reject " + n + " proposal(s)? They are never run.")) return;
    }
    const sent = [];
    for (const [cid, ids] of byCampaign) {
      const body = verb === "reject" ? { experiments: ids, reason } : { experiments: ids };
      const r = await api("POST", "/api/campaigns/" + cid + "/" + verb, body);
      if (!r.ok) { say("Refused: " + words(r) + ".", true); return; }
      sent.push([r.data, ids.length]);
    }
    const noun = verb === "approve" ? "approval" : "rejection";
    say("Sent " + noun + " of " + n + " proposal(s) in " + sent.length + " campaign(s); waiting for the controllers...");
    const results = await Promise.all(sent.map(([cmd, k]) => follow(cmd, noun + " of " + k + " proposal(s)")));
    await redraw(["live"]);
    say(results.map((x) => x.text).join(" "), results.some((x) => !x.ok));
  }

  function approvals() {
    on("#btn-select-all", () => {
      const boxes = [...document.querySelectorAll("#approvals input.pick")];
      const all = boxes.every((x) => x.checked);
      for (const x of boxes) x.checked = !all;
    });
    on("#btn-approve-selected", () => decide("approve"));
    on("#btn-reject-selected", () => decide("reject", document.getElementById("reject-reason").value.trim()));
  }

  /* ------------------------------------------------------------------ users */
  function showToken(name, token) {
    const p = document.getElementById("new-token");
    p.hidden = false;
    p.textContent = "API token of " + name + " (shown this once; keep it safe): " + token;
  }

  function users() {
    const user = (tr) => encodeURIComponent(tr.dataset.name);
    on(".btn-role", async (b, tr) => {
      const role = tr.querySelector("select.role").value;
      const r = await api("PATCH", "/api/users/" + user(tr), { role });
      if (r.ok) { await redraw(["users"]); say(tr.dataset.name + " is now " + r.data.role + "."); }
      else say("Refused: " + words(r) + ".", true);
    });
    on(".btn-disable", async (b, tr) => {
      if (!window.confirm("Disable " + tr.dataset.name + "? Their tokens stop working and their sessions end.")) return;
      const r = await api("PATCH", "/api/users/" + user(tr), { disabled: true });
      if (r.ok) { await redraw(["users"]); say(tr.dataset.name + " is disabled."); }
      else say("Refused: " + words(r) + ".", true);
    });
    on(".btn-enable", async (b, tr) => {
      const r = await api("PATCH", "/api/users/" + user(tr), { disabled: false });
      if (r.ok) { await redraw(["users"]); say(tr.dataset.name + " is enabled again (their old tokens stay revoked)."); }
      else say("Refused: " + words(r) + ".", true);
    });
    on(".btn-token", async (b, tr) => {
      if (!window.confirm("Replace the API token of " + tr.dataset.name + "? Their old tokens stop working.")) return;
      const r = await api("POST", "/api/users/" + user(tr) + "/token");
      if (r.ok) { showToken(r.data.name, r.data.token); say("New API token made for " + r.data.name + "."); }
      else say("Refused: " + words(r) + ".", true);
    });
    on(".btn-password", async (b, tr) => {
      const field = tr.querySelector("input.password");
      const r = await api("POST", "/api/users/" + user(tr) + "/password", { password: field.value });
      field.value = "";
      if (r.ok) say("Password of " + r.data.name + " set; their open sessions ended.");
      else say("Refused: " + words(r) + ".", true);
    });
    const form = document.getElementById("user-form");
    if (form && !form.dataset.wired) {
      form.dataset.wired = "yes";
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const password = document.getElementById("new-password").value;
        const body = { name: document.getElementById("new-name").value.trim(),
          role: document.getElementById("new-role").value, password: password || null };
        const r = await api("POST", "/api/users", body);
        document.getElementById("new-password").value = "";
        if (r.ok) {
          showToken(r.data.name, r.data.token);
          say("User " + r.data.name + " created with role " + r.data.role + ".");
          form.reset();
          await redraw(["users"]);
        } else say("Refused: " + words(r) + ".", true);
      });
    }
  }

  function wire() {
    const page = document.body.dataset.page;
    if (page === "instruments") instruments();
    else if (page === "alarms") alarms();
    else if (page === "approvals") approvals();
    else if (page === "users") users();
  }

  document.addEventListener("DOMContentLoaded", () => { wire(); autoRefresh(); });
})();
