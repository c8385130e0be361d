// "Try a patient": form → patient document → POST try/evaluate → result, rendered with text nodes only.
// Rule texts and patient ids are data: nothing here ever assigns markup (no innerHTML), so nothing
// a rule author or a user wrote can run in the page. Nothing is stored (no cookies, no storage).
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("cdss-page-data").textContent);
  const form = document.getElementById("patient-form");
  const byId = (id) => document.getElementById(id);

  // Banner words: never reassurance ("nothing to worry about"); the result decides, the page only names it.
  const URGENCY = {
    "emergency": ["Emergency: seek immediate medical attention", "Exercise advice is withheld."],
    "see-professional": ["See a health professional", "The referral is below."],
    "self-care": ["Self-care", "Self-care advice from these rules."],
    "none": ["No advice from these rules", "This is not a diagnosis and not an all clear."],
  };
  const SCREENING = {
    "positive": "Red-flag screening: POSITIVE. A red flag is present.",
    "negative": "Red-flag screening: negative (all three red-flag questions answered no).",
    "incomplete": "Red-flag screening: INCOMPLETE. At least one red-flag question is unanswered: this is not an all clear.",
  };
  const PLAN = {
    "recommended": "Recommended",
    "withheld": "Withheld",
    "pending-screening": "Pending: answer every red-flag question first",
    "pending-answers": "Pending: answer the open questions first",
    "not-indicated": "None needed on these answers",
  };

  // ------------------------------------------------------------ tiny DOM helpers (text only)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  function fill(node, ...children) { node.replaceChildren(); for (const c of children) if (c) node.append(c); }
  function ruleLink(id) {
    // a new tab, so the patient on this page stays as it is while the rule is read
    return el("a", { href: "rulebook#rule-" + encodeURIComponent(id), class: "rule-link", target: "_blank",
                     rel: "noopener", title: "This rule in the rulebook (opens a new tab)" }, data.rules[id] || id);
  }
  function fieldLabel(path) {
    const f = data.fields[path];
    return f ? f.section + ": " + f.label : path;
  }

  // A safe subset of the Markdown in card details: paragraphs, "- " lists, **bold**, `code`.
  function inline(text) {
    const out = document.createDocumentFragment();
    const parts = text.split(/(\*\*[^*]+\*\*|`[^`]+`)/);
    for (const part of parts) {
      if (part.startsWith("**") && part.endsWith("**") && part.length > 4) out.append(el("strong", {}, part.slice(2, -2)));
      else if (part.startsWith("`") && part.endsWith("`") && part.length > 2) out.append(el("code", {}, part.slice(1, -1)));
      else if (part) out.append(part);
    }
    return out;
  }
  function markdown(text) {
    const out = el("div", { class: "detail" });
    for (const block of String(text || "").split(/\n\s*\n/)) {
      const lines = block.split("\n").filter((l) => l.trim());
      if (!lines.length) continue;
      if (lines[0].startsWith("- ")) {
        const list = el("ul");
        let item = null;
        for (const line of lines) {
          if (line.startsWith("- ")) { item = el("li", {}, inline(line.slice(2))); list.append(item); }
          else if (item) item.append(" ", inline(line.trim()));
        }
        out.append(list);
      } else {
        out.append(el("p", {}, inline(lines.map((l) => l.trim()).join(" "))));
      }
    }
    return out;
  }

  // ------------------------------------------------------------ form ⇄ patient document
  class FormProblem extends Error {
    constructor(path, expected, found) {
      super(path + ": expected " + expected + ", found " + found);
      this.record = { path: path, expected: expected, found: found, message: this.message };
    }
  }
  function setPath(doc, path, value) {
    const keys = path.split(".");
    let node = doc;
    for (const key of keys.slice(0, -1)) node = node[key] = node[key] || {};
    node[keys[keys.length - 1]] = value;
  }
  function getPath(doc, path) {
    let node = doc;
    for (const key of path.split(".")) {
      if (node === null || typeof node !== "object" || !(key in node)) return undefined;
      node = node[key];
    }
    return node;
  }
  function formDocument() {
    const doc = {};
    for (const control of form.elements) {
      const kind = control.dataset && control.dataset.kind;
      if (!kind || (control.type === "radio" && !control.checked)) continue;
      let value = control.value;
      if (kind === "tristate" || kind === "enum") {
        if (value === "unknown") continue;
        if (kind === "tristate") value = value === "true";
      } else if (kind === "integer") {
        if (control.validity.badInput) throw new FormProblem("$." + control.name, "a whole number (or empty for unknown)", "text that is not a number");
        if (value.trim() === "") continue;
        value = Number(value);
      } else if (value === "") {
        continue;
      }
      setPath(doc, control.name, value);
    }
    return doc;
  }
  function fillForm(doc) {
    for (const control of form.elements) {
      const kind = control.dataset && control.dataset.kind;
      if (!kind) continue;
      const value = getPath(doc, control.name);
      if (kind === "tristate") control.checked = control.value === (value === true ? "true" : value === false ? "false" : "unknown");
      else if (kind === "enum") control.value = value === undefined || value === null ? "unknown" : String(value);
      else control.value = value === undefined || value === null ? "" : String(value);
    }
  }

  // ------------------------------------------------------------ talking to the server
  async function post(doc) {
    const response = await fetch("try/evaluate", {
      method: "POST", cache: "no-store", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(doc),
    });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    return { ok: response.ok, status: response.status, body: body };
  }

  // Two error shapes reach this page: /try/evaluate's own {"error": {path, expected, found, message}}, and the
  // service's flat {"error": code, "message"} from the layers in front of it (the 1 MiB limit, the last-guard 500).
  function errorRecord(answer) {
    const body = answer.body || {};
    if (answer.status === 413) {
      return { message: "The patient document is over 1 MiB, so it was not evaluated (a patient document is far smaller)." };
    }
    if (body.error && typeof body.error === "object") return body.error;
    if (typeof body.message === "string" && body.message) return { message: body.message };
    return { message: "The server answered HTTP " + answer.status + ": nothing was evaluated. This is not an all-clear." };
  }

  let sequence = 0;
  async function update() {
    const mine = ++sequence;
    let doc;
    try {
      doc = formDocument();
    } catch (problem) {
      if (problem instanceof FormProblem) { showError(problem.record); return; }
      throw problem;
    }
    byId("patient-json").value = JSON.stringify(doc, null, 2);
    byId("result").setAttribute("aria-busy", "true");
    let answer;
    try {
      answer = await post(doc);
    } catch (e) {
      if (mine === sequence) showError({ message: "The server could not be reached, so there is no result." });
      return;
    }
    if (mine !== sequence) return; // a newer answer is on its way: never show an older result
    if (!answer.ok || !answer.body || !answer.body.result) {
      showError(errorRecord(answer));
      return;
    }
    render(answer.body);
  }

  // ------------------------------------------------------------ rendering
  function evaluated() {
    // a counter scripts and tests can wait on: it grows each time a result (or an error) is shown
    const box = byId("result");
    box.dataset.evaluations = String(Number(box.dataset.evaluations || 0) + 1);
    box.removeAttribute("aria-busy");
  }

  function showError(record) {
    // No result is better than a stale one: clear everything before saying what is wrong.
    const box = byId("error");
    const text = record.path && record.path !== "$"
      ? ["This answer cannot be evaluated: ", el("code", {}, record.path), " expected " + record.expected + ", found " + record.found + "."]
      : [record.message || "This document cannot be evaluated."];
    fill(box, el("p", {}, ...text), record.hint ? el("p", {}, record.hint) : null);
    box.hidden = false;
    const banner = byId("urgency");
    banner.dataset.urgency = "";
    byId("urgency-title").textContent = "No result";
    byId("urgency-detail").textContent = "Fix the answer named above.";
    mirror();
    byId("result-body").hidden = true;
    evaluated();
  }

  function render(answer) {
    const result = answer.result;
    byId("error").hidden = true;
    byId("result-body").hidden = false;

    const [title, detail] = URGENCY[result.urgency] || [result.urgency, ""];
    byId("urgency").dataset.urgency = result.urgency;
    byId("urgency-title").textContent = title;

    const screening = byId("screening");
    screening.dataset.screening = result.red_flag_screening;
    screening.textContent = SCREENING[result.red_flag_screening] || result.red_flag_screening;

    // open questions: issue 17's `questions` when present, else the unanswered fields some rule needed
    const questions = "questions" in result ? (result.questions || [])
      : (result.missing || []).map((path) => ({ field: path, reason: "A rule needs this answer.", could_change: null }));
    fill(byId("questions"), ...questions.map((q) => el("li", { "data-field": q.field },
      el("a", { href: "#q-" + q.field, class: "field-link" }, fieldLabel(q.field)),
      q.reason ? el("span", { class: "reason" }, " " + q.reason) : null,
      q.could_change ? el("span", { class: "tag" }, "could change the " + q.could_change) : null)));
    byId("questions-box").hidden = questions.length === 0;
    byId("urgency-detail").textContent = detail + (questions.length && result.urgency !== "emergency"
      ? " " + questions.length + (questions.length === 1 ? " unanswered question below could" : " unanswered questions below could") + " change this result."
      : "");
    mirror();

    const conflicts = result.conflicts || [];
    fill(byId("conflicts"), ...conflicts.map((c) => el("li", {},
      c.message, " ", el("span", { class: "muted" }, "(" + (c.fields || []).map(fieldLabel).join("; ") + ")"))));
    byId("conflicts-box").hidden = conflicts.length === 0;

    const findings = result.findings || [];
    fill(byId("findings"), ...(findings.length ? findings.map((f) => el("li", { "data-rule": f.rule, "data-side": f.side },
      f.text, f.side ? el("span", { class: "tag side" }, f.side + " side") : null, " ", ruleLink(f.rule)))
      : [el("li", { class: "muted" }, "No findings.")]));

    renderPlan(result.plan || {});

    const referrals = (result.cards || []).filter((c) => c.referral);
    fill(byId("referrals"), ...(referrals.length ? referrals.map((c) => el("li", { "data-rule": c.rule },
      el("strong", {}, (c.referral.to || []).join(" or ")), c.referral.timeframe ? " · " + c.referral.timeframe : "",
      el("br"), c.referral.reason || "", " ", ruleLink(c.rule)))
      : [el("li", { class: "muted" }, "No referral.")]));

    fill(byId("cards"), ...(result.cards || []).map(renderCard));
    if (!(result.cards || []).length) byId("cards").append(el("p", { class: "muted" }, "No cards."));

    // the trace: rules that fired first, each condition in words with the value it saw
    const steps = (answer.trace || []).slice().sort((a, b) => Number(b.fired) - Number(a.fired));
    fill(byId("trace"), ...steps.map((step) => el("li", { class: step.fired ? "fired" : "not-fired", "data-rule": step.rule },
      el("span", { class: "tag" }, step.fired ? "fired" : "did not fire"), " ", ruleLink(step.rule),
      whyTree(data.conditions[step.rule], step.conditions || []))));

    // issue 17 adds what the screen does not cover and the rule set's review status; shown as plain text
    fill(byId("scope"), ...["scope", "review_status", "review"].filter((k) => result[k] !== undefined && result[k] !== null)
      .map((k) => el("div", { "data-key": k }, loose(result[k]))));

    const rs = result.rule_set || {};
    fill(byId("stamp"), "Rule set ", el("code", {}, rs.id), " " + rs.version + " · digest ", el("code", {}, rs.digest),
      " · cdss " + result.cdss_version,
      result.patient_id !== undefined ? " · patient " : null,
      result.patient_id !== undefined ? el("code", { id: "patient-id" }, result.patient_id) : null);
    evaluated();
  }

  function shown(value) {
    return value === undefined || value === null ? "unknown" : JSON.stringify(value);
  }

  function whyNode(shape, conditions, state) {
    // returns [list item, holds]; leaves take the trace's conditions in order (depth first, every leaf)
    if (shape.op === "leaf") {
      const c = conditions[state.next++] || {};
      const node = el("li", { class: c.result ? "holds" : "fails" }, shape.text, " ",
        el("span", { class: "muted" }, "(", el("code", {}, c.field + " " + c.op + " " + shown(c.value)),
          c.param ? " = parameter " + c.param : "", ")"),
        " · saw ", el("code", {}, shown(c.saw)), " → ", el("strong", {}, c.result ? "yes" : "no"));
      return [node, Boolean(c.result)];
    }
    const parts = shape.children.map((child) => whyNode(child, conditions, state));
    const holds = shape.op === "not" ? !parts[0][1] : shape.op === "all" ? parts.every((p) => p[1]) : parts.some((p) => p[1]);
    const words = { all: "all of:", any: "any of:", not: "it is not the case that:" }[shape.op];
    return [el("li", { class: holds ? "holds" : "fails" }, el("span", { class: "op" }, words), " → ", el("strong", {}, holds ? "yes" : "no"),
      el("ul", {}, ...parts.map((p) => p[0]))), holds];
  }

  function whyTree(shape, conditions) {
    if (!shape) { // a rule the page does not know: the flat list of conditions
      return el("ul", {}, ...conditions.map((c) => el("li", {}, el("code", {}, c.field + " " + c.op + " " + shown(c.value)),
        " · saw ", el("code", {}, shown(c.saw)), " → " + (c.result ? "yes" : "no"))));
    }
    const [node, holds] = whyNode(shape, conditions, { next: 0 });
    return el("ul", { class: "why-tree", "data-holds": String(holds) }, node);
  }

  function loose(value) {
    // a value whose exact shape this page does not know: strings as text, lists as lists, objects as "key: value"
    if (value === null || value === undefined) return "";
    if (Array.isArray(value)) return el("ul", {}, ...value.map((v) => el("li", {}, loose(v))));
    if (typeof value === "object") {
      return el("ul", {}, ...Object.entries(value).map(([k, v]) => el("li", {}, el("strong", {}, k.replace(/_/g, " ") + ": "), loose(v))));
    }
    return String(value);
  }

  function mirror() {
    // the phone's bottom bar repeats the banner, so the result is never out of sight while answering
    const bar = byId("mini-status");
    bar.dataset.urgency = byId("urgency").dataset.urgency;
    bar.textContent = "Result: " + byId("urgency-title").textContent;
  }

  function dose(range, unit) {
    if (!range) return null;
    return (range.min === range.max ? String(range.min) : range.min + "–" + range.max) + " " + unit;
  }

  function renderPlan(plan) {
    const box = byId("plan");
    box.dataset.planStatus = plan.status || "";
    const head = el("p", { class: "plan-status" }, el("strong", {}, PLAN[plan.status] || plan.status),
      plan.phase ? " · " + plan.phase + " phase" : "");
    const exercises = (plan.exercises || []).map((x) => el("li", { "data-exercise": x.id },
      el("strong", {}, x.name), " · ", el("span", { class: "dose" }, [dose(x.sets, "sets"), dose(x.reps, "reps")].filter(Boolean).join(" of ")),
      (x.targets || []).length ? el("span", { class: "muted" }, " · " + x.targets.join(", ")) : null,
      x.instructions ? el("p", { class: "instructions" }, x.instructions) : null));
    fill(box, head, exercises.length ? el("ol", { class: "exercises" }, ...exercises) : null,
      (plan.notes || []).length ? el("ul", { class: "notes" }, ...plan.notes.map((n) => el("li", {}, n))) : null);
  }

  function renderCard(card) {
    const source = card.source || {};
    return el("article", { class: "card card-" + card.indicator, "data-indicator": card.indicator, "data-rule": card.rule },
      el("p", { class: "card-head" }, el("span", { class: "indicator" }, card.indicator), " ", el("strong", { class: "summary" }, card.summary)),
      markdown(card.detail),
      card.referral ? el("p", { class: "referral" }, "Refer to " + (card.referral.to || []).join(" or ") + (card.referral.timeframe ? ", " + card.referral.timeframe : "") + ".") : null,
      el("p", { class: "source" }, "Source: ", el("cite", {}, source.label), source.section ? " · " + source.section : ""),
      source.quote ? el("blockquote", {}, source.quote) : null,
      el("p", { class: "card-rule" }, "Rule: ", ruleLink(card.rule)));
  }

  // ------------------------------------------------------------ loading documents
  function loadError(message) {
    const box = byId("load-error");
    box.textContent = message;
    box.hidden = !message;
  }
  async function loadDocument(doc, what) {
    // validate first: a document the form cannot show exactly (a typo, a wrong type) is refused, form untouched
    let answer;
    try { answer = await post(doc); } catch (e) { loadError("The server could not be reached."); return; }
    if (!answer.ok) {
      const e = errorRecord(answer);
      loadError(what + " was not loaded: " + String(e.message).replace(/\.$/, "") + (e.hint ? " (" + e.hint + ")" : "") + ". The form is unchanged.");
      return;
    }
    loadError("");
    fillForm(doc);
    update();
  }
  async function loadFile(file) {
    if (!file) return;
    if (file.size > data.maxBytes) { loadError(file.name + " was not loaded: larger than a patient document can be."); return; }
    let doc;
    try { doc = JSON.parse(await file.text()); } catch (e) { loadError(file.name + " was not loaded: not valid JSON (" + e.message + ")."); return; }
    await loadDocument(doc, file.name);
  }

  // ------------------------------------------------------------ wiring
  let timer = null;
  form.addEventListener("change", () => { clearTimeout(timer); update(); });
  form.addEventListener("input", (event) => {
    if (event.target.type === "radio" || event.target.tagName === "SELECT") return; // "change" handles these
    clearTimeout(timer);
    timer = setTimeout(update, 250);
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); update(); });
  byId("load-example").addEventListener("click", () => {
    const name = byId("example").value;
    loadError("");
    fillForm(data.examples[name] || {});
    update();
  });
  byId("clear").addEventListener("click", () => { loadError(""); fillForm({}); update(); });
  byId("file").addEventListener("change", (event) => { loadFile(event.target.files[0]); event.target.value = ""; });
  form.addEventListener("dragover", (event) => { event.preventDefault(); form.classList.add("dragging"); });
  form.addEventListener("dragleave", () => form.classList.remove("dragging"));
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    form.classList.remove("dragging");
    loadFile(event.dataTransfer && event.dataTransfer.files[0]);
  });
  byId("copy-json").addEventListener("click", async () => {
    const text = byId("patient-json").value;
    const status = byId("copy-status");
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = "Copied.";
    } catch (e) {
      // no clipboard API (plain http outside localhost): open the JSON and select it for Ctrl+C
      const area = byId("patient-json");
      area.closest("details").open = true;
      area.focus();
      area.select();
      status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
    }
  });
  update();
})();
