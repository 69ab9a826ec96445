// The web page of `vidstyle serve`: plain JavaScript over the JSON API, no build step.
"use strict";
const vidstyle = (() => {
  const $ = (id) => document.getElementById(id);

  // What a failed request's answer says went wrong: the API's detail, or its status where the answer is no JSON
  // (a proxy's error page, a server that failed before the API could answer).
  async function failure(response) {
    const text = await response.text();
    const status = `${response.status} ${response.statusText}`.trim(); // HTTP/2 sends no status text
    try {
      return JSON.parse(text).detail || status;
    } catch {
      return `the server answered ${status}`;
    }
  }

  async function getJson(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(await failure(response));
    return response.json();
  }

  function clock(seconds) {
    if (seconds == null) return "";
    const s = Math.round(seconds);
    return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
  }

  // 100 % is a finished job only, not one with its last frame still to paint or its video still to write.
  const percentOf = (job) => (job.state === "done" ? 100 : Math.min(99, Math.floor(job.progress * 100)));

  async function showStyles() {
    const box = $("styles");
    for (const [i, style] of (await getJson("/api/styles")).entries()) {
      const label = document.createElement("label");
      label.innerHTML = `<input type="radio" name="style" value="${style.name}" ${i === 0 ? "checked" : ""}>` +
        `<img src="${style.thumbnail}" alt="${style.name}"><span>${style.name}</span>`;
      box.appendChild(label);
    }
  }

  async function showGallery() {
    const items = await getJson("/api/gallery?limit=12");
    if (!items.length) return;
    $("gallery").innerHTML = items.map((item) =>
      `<a href="${item.page}"><img src="${item.preview}" alt="creation ${item.id}" loading="lazy"></a>`).join("");
  }

  async function showJobs() {
    const jobs = await getJson("/api/jobs?limit=20");
    $("jobs").querySelector("tbody").innerHTML = jobs.map((job) =>
      `<tr><td><a href="${job.urls.page}">${job.id.slice(0, 8)}</a> ${job.kind}</td><td>${job.state}</td>` +
      `<td>${percentOf(job)} %</td><td>${new Date(job.created * 1000).toLocaleString()}</td></tr>`
    ).join("");
  }

  function formData(form) {
    const data = new FormData(form);
    for (const [key, value] of [...data.entries()]) {
      // Empty fields mean "the preset's value"; an empty file field is no upload.
      if (value === "" || (value instanceof File && !value.name && !value.size)) data.delete(key);
    }
    if ($("style_file").files.length) data.delete("style");
    if ($("preserve_colors").checked) data.set("preserve_colors", "true");
    return data;
  }

  async function submit(event) {
    event.preventDefault();
    $("error").textContent = "";
    $("submit").disabled = true;
    try {
      const response = await fetch("/api/jobs", { method: "POST", body: formData(event.target) });
      if (!response.ok) throw new Error(await failure(response));
      window.location.href = (await response.json()).urls.page;
    } catch (error) {
      $("error").textContent = `Not queued: ${error.message}`;
      $("submit").disabled = false;
    }
  }

  function indexPage() {
    $("create").addEventListener("submit", submit);
    $("create").hidden = false; // hidden in the page itself: without this script it could send nothing
    showStyles().catch((e) => { $("error").textContent = e.message; });
    showGallery().catch(() => {});
    showJobs().catch(() => {});
    setInterval(() => { showGallery().catch(() => {}); showJobs().catch(() => {}); }, 5000);
  }

  function showJob(job) {
    const percent = percentOf(job);
    $("state").textContent = job.state;
    $("bar").value = percent;
    $("percent").textContent = `${percent} %`;
    $("frames").textContent = job.frames ? `· frame ${job.frame} of ${job.frames}` : "";
    $("eta").textContent = job.state === "running" && job.eta_seconds != null ? `· about ${clock(job.eta_seconds)} left` : "";
    $("error").textContent = job.error || "";
    $("cancel").hidden = !["queued", "running"].includes(job.state);
    $("delete").hidden = job.state === "running";
    if (job.urls.preview && job.state !== "done") {
      $("preview-box").hidden = false;
      if ($("preview").getAttribute("src") !== job.urls.preview) $("preview").src = job.urls.preview;
    }
    if (job.state === "done") showResult(job);
  }

  function showResult(job) {
    $("preview-box").hidden = true;
    $("download").hidden = false;
    $("download").href = `${job.urls.result}?download=true`;
    const element = job.kind === "video" ? $("video") : $("still");
    if (element.getAttribute("src") === job.urls.result) return;
    element.src = job.urls.result;
    element.hidden = false;
    if (job.kind === "video") element.play().catch(() => {});
  }

  function jobPage() {
    const id = window.location.pathname.split("/").pop();
    $("job-id").textContent = id;
    const events = new EventSource(`/api/jobs/${id}/events`);
    events.addEventListener("progress", (event) => showJob(JSON.parse(event.data)));
    // The browser reconnects by itself; until then the figures shown are old, and the page says so.
    events.addEventListener("error", () => {
      if (events.readyState !== EventSource.CLOSED) $("eta").textContent = "· the server does not answer: trying again";
    });
    events.addEventListener("end", (event) => {
      events.close();
      const job = JSON.parse(event.data);
      if (job.id) showJob(job);
      else if (job.state === "deleted") $("state").textContent = "deleted";
    });
    // A button's failure has a line of its own: the job's own error line is rewritten by every progress event.
    const act = (button, what, request, done) => $(button).addEventListener("click", async () => {
      $("action-error").textContent = "";
      try {
        const response = await fetch(`/api/jobs/${id}${request.path}`, { method: request.method });
        if (!response.ok) throw new Error(await failure(response));
        done();
      } catch (error) {
        $("action-error").textContent = `Not ${what}: ${error.message}`;
      }
    });
    act("cancel", "cancelled", { path: "/cancel", method: "POST" }, () => {});
    act("delete", "deleted", { path: "", method: "DELETE" }, () => { window.location.href = "/"; });
  }

  return { indexPage, jobPage };
})();
