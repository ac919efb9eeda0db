// The demo page: starts an enrolment or a claim-by-QR login through Hermod's /demo calls, shows
// the QR code (a new frame every second for a login), and the outcome.
"use strict";

const $ = (id) => document.getElementById(id);

async function call(method, path, body) {
  const answer = await fetch(path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await answer.json();
  if (!answer.ok) throw new Error(json.detail || json.title || answer.status);
  return json;
}

// Follows a command until it ends: its QR code refreshed every second while it is open.
function follow(id, qr, status, done) {
  let frames = 0;
  const tick = async () => {
    const command = await call("GET", `/demo/commands/${id}`);
    status.textContent = command.status;
    if (["approved", "declined", "cancelled", "expired"].includes(command.status)) {
      qr.hidden = true;
      done(command);
      return;
    }
    const n = ++frames;
    // `data-shown` counts the codes drawn: it moves once the new image is on screen.
    qr.onload = () => { qr.dataset.shown = String(n); };
    qr.src = `/demo/commands/${id}/qr?frame=${n}`;
    setTimeout(tick, 1000);
  };
  tick().catch((e) => { status.textContent = `error: ${e.message}`; });
}

$("enrol-start").addEventListener("click", async () => {
  const started = await call("POST", "/demo/enrol", { user_id: $("enrol-user").value });
  $("enrol").hidden = false;
  $("enrol-link").textContent = started.link;
  follow(started.id, $("enrol-qr"), $("enrol-status"), (c) => {
    $("enrol-status").textContent = c.status === "approved" ? `enrolled: ${c.answered_by}` : c.status;
  });
});

$("login-start").addEventListener("click", async () => {
  const started = await call("POST", "/demo/login");
  $("login").hidden = false;
  $("login-code").textContent = started.verification_code;
  follow(started.id, $("login-qr"), $("login-status"), (c) => {
    $("login-who").textContent = c.user_id ? `(${c.user_id} on ${c.device_id})` : "";
    if (c.reason) $("login-who").textContent += ` reason: ${c.reason}`;
  });
});
