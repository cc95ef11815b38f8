// adclick's dashboard: asks the API (with the key the page was opened with) every few seconds
// and draws the answers. No framework and no third-party code: the page must work offline.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const TOP_COUNT = 20;
  // Freshness is a sawtooth: it climbs through each minute and drops when the next one lands
  // (10-20 s after that minute's end), so it is normally below 80 s.
  const STALE_S = 90;
  const KEY_ITEM = "adclick.api-key";
  const SVG = "http://www.w3.org/2000/svg";
  const state = {key: null, ad: null, generation: 0};
  const $ = (id) => document.getElementById(id);

  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // The key arrives in the fragment (never sent to a server); keep it for this tab only.
  function takeKey() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    if (fragment.get("key")) {
      sessionStorage.setItem(KEY_ITEM, fragment.get("key"));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(KEY_ITEM);
  }

  async function api(path, query) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(query)) {
      if (value !== "" && value !== null && value !== undefined) {
        url.searchParams.set(name, value);
      }
    }
    const response = await fetch(url, {headers: {Authorization: "Bearer " + state.key}});
    const body = await response.json();
    if (!response.ok) {
      throw new ApiFailure(response.status, body.error || response.statusText);
    }
    return body;
  }

  function filters() {
    return {
      minutes: $("minutes").value,
      country: $("country").value.replace(/\s+/g, "").toUpperCase(),
      device: $("device").value,
      traffic: $("traffic").value,
    };
  }

  function hhmm(iso) {
    return iso.slice(11, 16);
  }

  function element(tag, attributes, text) {
    const node = tag === "svg" || attributes.svg
      ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name !== "svg") {
        node.setAttribute(name, value);
      }
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function renderTop(top) {
    $("range").textContent = hhmm(top.from) + "–" + hhmm(top.to) + " UTC";
    const rows = top.ads.map((ad, index) => {
      const row = element("tr", {"data-ad-id": ad.ad_id, "data-count": ad.count});
      if (ad.ad_id === state.ad) {
        row.className = "chosen";
      }
      row.append(element("td", {}, String(index + 1)), element("td", {}, ad.ad_id),
        element("td", {class: "number"}, ad.count.toLocaleString("en")));
      row.addEventListener("click", () => {
        state.ad = ad.ad_id;
        refresh();
      });
      return row;
    });
    if (rows.length === 0) {
      rows.push(element("tr", {class: "empty"}));
      rows[0].append(element("td", {colspan: 3}, "no clicks in this range"));
    }
    $("top-ads").tBodies[0].replaceChildren(...rows);
  }

  // Bars: every ad's clicks per minute. Line and dots: the chosen ad's, on the same scale.
  function renderChart(all, one) {
    const width = 640, height = 300, left = 56, bottom = 24, top = 10;
    const minutes = all.minutes;
    const peak = Math.max(1, ...minutes.map((m) => m.clicks));
    const step = (width - left) / Math.max(1, minutes.length);
    const y = (clicks) => height - bottom - (height - bottom - top) * clicks / peak;
    const parts = [
      element("line", {svg: 1, x1: left, y1: height - bottom, x2: width, y2: height - bottom,
        class: "axis"}),
      element("text", {svg: 1, x: left - 6, y: top + 10, class: "label end"},
        peak.toLocaleString("en")),
      element("text", {svg: 1, x: left - 6, y: height - bottom, class: "label end"}, "0"),
    ];
    minutes.forEach((minute, index) => {
      const x = left + index * step;
      parts.push(element("rect", {svg: 1, class: "all", x: x + step * 0.1, width: step * 0.8,
        y: y(minute.clicks), height: height - bottom - y(minute.clicks),
        "data-minute": minute.minute, "data-clicks": minute.clicks}));
      const every = Math.ceil(minutes.length / 8);
      if (index % every === 0) {
        parts.push(element("text", {svg: 1, x: x + step / 2, y: height - 6, class: "label"},
          hhmm(minute.minute)));
      }
    });
    if (one) {
      const points = one.minutes.map((minute, index) =>
        [left + index * step + step / 2, y(minute.clicks)]);
      parts.push(element("polyline", {svg: 1, class: "ad",
        points: points.map((p) => p.join(",")).join(" ")}));
      one.minutes.forEach((minute, index) => {
        parts.push(element("circle", {svg: 1, class: "ad", cx: points[index][0],
          cy: points[index][1], r: 3, "data-minute": minute.minute,
          "data-clicks": minute.clicks}));
      });
    }
    $("chosen-ad").textContent = one ? one.ad_id : "";
    $("chart").replaceChildren(...parts);
  }

  function percent(ratio) {
    return ratio === null ? "-" : (100 * ratio).toFixed(2) + " %";
  }

  // The chosen ad's impressions, clicks, conversions, CTR and CVR (of the traffic chosen), and
  // its invalid clicks by reason, whatever traffic is chosen.
  function renderMetrics(metrics) {
    $("metrics-ad").textContent = metrics ? metrics.ad_id : "";
    const cells = metrics ? {
      impressions: metrics.impressions.toLocaleString("en"),
      clicks: metrics.clicks.toLocaleString("en"),
      conversions: metrics.conversions.toLocaleString("en"),
      ctr: percent(metrics.ctr), cvr: percent(metrics.cvr),
      invalid: metrics.invalid_clicks.toLocaleString("en") + " ("
        + percent(metrics.invalid_click_rate) + " of all)",
    } : {};
    for (const name of ["impressions", "clicks", "conversions", "ctr", "cvr", "invalid"]) {
      $("m-" + name).textContent = cells[name] || "-";
    }
    $("m-reasons").textContent = metrics ? "invalid by reason: " + Object.entries(
      metrics.invalid_clicks_by_reason).map(([reason, n]) => reason + " " + n).join(" · ") : "";
  }

  function seconds(value) {
    if (value === null || value === undefined) {
      return "-";
    }
    if (value >= 7200) {
      return (value / 3600).toFixed(1) + " h";
    }
    return Math.round(value) + " s";
  }

  function renderHealth(status) {
    const fresh = status.freshness_s;
    $("freshness").textContent = fresh === null ? "no complete minute yet"
      : seconds(fresh) + " (minute " + hhmm(status.newest_complete_minute) + ")";
    $("freshness").className = fresh !== null && fresh > STALE_S ? "warn" : "";
    if (status.loader === null) {
      $("lag").textContent = "no loader in this process";
    } else {
      $("lag").textContent = Object.entries(status.loader.lag)
        .map(([topic, lag]) => topic + " " + (lag === null ? "?" : lag.toLocaleString("en")))
        .join(" · ");
    }
    // Newest first: what a person looks at is whether the last minutes are clean.
    $("late-minutes").tBodies[0].replaceChildren(...status.minutes.slice().reverse().map((m) => {
      const row = element("tr", {"data-minute": m.minute});
      row.append(element("td", {}, hhmm(m.minute)),
        ...[m.late_corrections, m.too_late, m.dead_letters].map((n) =>
          element("td", {class: n > 0 ? "number warn-soft" : "number"}, String(n))));
      return row;
    }));
    const flink = status.flink;
    if (flink === null) {
      $("checkpoint").textContent = "Flink REST URL not configured";
    } else if (flink.error) {
      $("checkpoint").textContent = "Flink does not answer";
      $("checkpoint").className = "warn";
    } else {
      const checkpoints = flink.jobs.map((job) => job.last_checkpoint
        ? "#" + job.last_checkpoint.id + ", " + seconds(job.last_checkpoint.age_s) + " ago"
        : job.state + ", none yet");
      $("checkpoint").textContent = checkpoints.join(" · ") || "no job running";
      $("checkpoint").className = flink.jobs.length === 0 ? "warn" : "";
    }
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = !message;
  }

  async function refresh() {
    if (!state.key) {
      $("key-form").hidden = false;
      return;
    }
    const generation = ++state.generation;
    const wanted = filters();
    try {
      const [top, all, status] = await Promise.all([
        api("/v1/ads/popular_ads", {...wanted, count: TOP_COUNT}),
        api("/v1/ads/per_minute", wanted),
        // An advertiser's key reads its ads only, not the pipeline's status (a 403).
        api("/v1/status", {}).catch((failure) => {
          if (failure.status === 403) {
            return null;
          }
          throw failure;
        }),
      ]);
      if (state.ad === null && top.ads.length > 0) {
        state.ad = top.ads[0].ad_id;
      }
      const [one, metrics] = state.ad === null ? [null, null] : await Promise.all([
        api("/v1/ads/per_minute", {...wanted, ad_id: state.ad}),
        api("/v1/ads/" + encodeURIComponent(state.ad) + "/metrics", wanted),
      ]);
      if (generation !== state.generation) {
        return;  // the filters changed meanwhile: a newer refresh draws
      }
      renderTop(top);
      renderChart(all, one);
      renderMetrics(metrics);
      $("health").hidden = status === null;
      $("late-section").hidden = status === null;
      if (status !== null) {
        renderHealth(status);
      }
      showError("");
      document.body.dataset.filters = JSON.stringify(wanted);
      document.body.dataset.updated = String(generation);
    } catch (failure) {
      if (failure.status === 401) {
        sessionStorage.removeItem(KEY_ITEM);
        state.key = null;
        $("key-form").hidden = false;
      }
      showError(failure.message);
    }
  }

  $("controls").addEventListener("change", refresh);
  $("controls").addEventListener("submit", (event) => event.preventDefault());
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_ITEM, $("key").value.trim());
    state.key = sessionStorage.getItem(KEY_ITEM);
    $("key-form").hidden = true;
    refresh();
  });
  state.key = takeKey();
  refresh();
  setInterval(refresh, REFRESH_MS);
}());
