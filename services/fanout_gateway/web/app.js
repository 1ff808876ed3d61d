// The results page: signs in with a pasted token (kept in memory only), follows the user's stream with
// the project's own client (stream.js, clients/stream) and draws the latest result with uPlot.
import { connect } from "./vendor/stream.js";

const $ = (id) => document.getElementById(id);
const MESSAGES = {
  auth: "The token was refused or has expired. Print a fresh one (circadia token <user>) and sign in again.",
  forbidden: "A refreshed token named another user; sign in again.",
  erased: "This user's data was erased. New uploads start afresh.",
  replaced: "Another window of this user opened too many streams; this one was closed.",
};
const charts = {};
let span = [0, 1]; // the result's 7-day window, in seconds: both charts' x range
let stream = null;
let token = null;
const delivered = [];

function status(text) { $("status").textContent = text; }

function problem(text) {
  $("problem").textContent = text;
  $("problem").hidden = !text;
}

function dayTime(date) { return Date.parse(`${date}T12:00:00Z`) / 1000; }

function chart(id, label, color, days, values, bars) {
  const data = [days.map((d) => dayTime(d.date)), values];
  const options = {
    width: Math.max(320, $(id).clientWidth || 420), height: 200,
    scales: { x: { time: true, range: () => span } },
    series: [{}, { label, stroke: color, fill: bars ? `${color}55` : undefined, width: 2,
                   paths: bars ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined, points: { show: !bars } }],
    axes: [{}, { size: 60 }],
  };
  const empty = values.every((v) => v === null || v === undefined);
  $(id).dataset.empty = empty ? "true" : "false";
  $(id).title = empty ? `no ${label} in this window` : "";
  if (charts[id]) charts[id].setData(data);
  else charts[id] = new uPlot(options, data, $(id));
}

function fmt(value, digits = 2) { return value === null || value === undefined ? "—" : Number(value).toFixed(digits); }

function render(prediction, cursor) {
  const days = prediction.daily_activity ?? [];
  span = [Date.parse(prediction.window_start) / 1000 - 43_200, Date.parse(prediction.window_end) / 1000 + 43_200];
  $("week").hidden = false;
  $("coverage").textContent = `(${fmt(100 * (prediction.window_coverage ?? 0), 1)} % of the week covered)`;
  chart("steps-chart", "steps", "#2f6fdf", days, days.map((d) => d.steps), true);
  chart("heart-chart", "bpm", "#c23b3b", days, days.map((d) => d.heart_rate_mean), false);
  const c = prediction.circadian ?? {};
  const rows = [["Interdaily stability (IS)", fmt(c.interdaily_stability)],
                ["Intradaily variability (IV)", fmt(c.intradaily_variability)],
                ["Relative amplitude (RA)", fmt(c.relative_amplitude)],
                ["Acrophase", prediction.cosinor?.acrophase ?? "—"],
                ["Method", `${c.method ?? "—"}; ${prediction.cosinor?.method ?? ""}`],
                ["Input, days used", `${c.input ?? "—"}, ${c.days_used ?? 0}`]];
  $("rhythm").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  $("sleep").tBodies[0].replaceChildren(...(prediction.sleep_nights ?? []).map((n) => {
    const tr = document.createElement("tr");
    for (const v of [n.date_of_sleep ?? n.night, fmt(n.time_in_bed_minutes, 0) + " min",
                     fmt(n.total_sleep_minutes, 0) + " min", fmt(n.efficiency), n.method]) {
      const td = document.createElement("td"); td.textContent = v; tr.append(td);
    }
    return tr;
  }));
  const refused = [];
  if (c.refused) refused.push(`circadian rhythm: ${c.refused}`);
  if (prediction.cosinor?.refused) refused.push(`cosinor: ${prediction.cosinor.refused}`);
  if (prediction.pat_unavailable) refused.push(`PAT: ${prediction.pat_unavailable}`);
  for (const d of days) if (d.refused) refused.push(`${d.date}: ${d.refused}`);
  for (const n of prediction.sleep_nights ?? []) if (n.refused) refused.push(`sleep ${n.night}: ${n.refused}`);
  $("refused").replaceChildren(...(refused.length ? refused : ["nothing"]).map((text) => {
    const li = document.createElement("li"); li.textContent = text; return li;
  }));
  delivered.push(`${cursor.partition}:${cursor.offset}`);
  $("offsets").textContent = delivered.join(" ");
  $("offsets").dataset.offsets = delivered.join(" ");
}

function start(newToken) {
  token = newToken;
  if (stream) stream.close();
  problem("");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`;
  stream = connect({ url, getToken: () => token });
  stream.addEventListener("prediction", (e) => render(e.detail.prediction, e.detail.cursor));
  stream.addEventListener("reset", () => { delivered.length = 0; });
  stream.addEventListener("state", (e) => {
    const { state, reason, retryInMs } = e.detail;
    if (state === "live") { status(`Live: ${stream.userId}`); $("sign-in").hidden = true; }
    else if (state === "waiting") status(`Reconnecting in ${Math.round(retryInMs / 100) / 10} s (${reason})…`);
    else if (state === "closed" && reason !== "closed") {
      status("Not signed in.");
      problem(MESSAGES[reason] ?? `The stream closed (${reason}).`);
      $("sign-in").hidden = false;
    }
  });
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  $("token").value = "";
  if (value) start(value);
});
