/* anteroom client: wait inside your own page. Served at /__anteroom/client.js.
 *
 *   <script src="/__anteroom/client.js"></script>
 *   const resp = await Anteroom.fetch("/chat", { method: "POST", body },
 *                                     { onWait: (s) => show(s.position, s.waitMs) });
 *
 * Anteroom.fetch(url, init, options) is fetch() that waits its turn: when a
 * room answers 503 QUEUE_REQUIRED, a sessions room's ticket is polled at
 * /__anteroom/status until the visitor is let in (the pass comes back as a
 * cookie and, for other origins, as X-Anteroom-Pass), a requests room's
 * Retry-After is waited out, and the request is sent again by itself.
 * options: onWait(status) on every news (status.state "queued" with
 * position, ahead, waitMs, waitKnown; or "retrying" with retryAfterMs),
 * signal (an AbortSignal to give up), base (anteroom's origin when the page
 * is elsewhere). Anteroom.status(room) reads a visitor's place once. */
(function (global) {
  "use strict";
  var PREFIX = "/__anteroom/";
  var pass = null;

  function sleep(ms, signal) {
    return new Promise(function (resolve, reject) {
      var timer = setTimeout(resolve, ms);
      if (signal) {
        signal.addEventListener("abort", function () {
          clearTimeout(timer);
          reject(signal.reason || new Error("aborted"));
        }, { once: true });
      }
    });
  }

  // Jitter spreads a crowd's polls apart.
  function jitter(ms) { return ms * (0.8 + Math.random() * 0.4); }

  function withHeaders(init, extra) {
    var headers = new Headers((init && init.headers) || {});
    Object.keys(extra).forEach(function (k) { if (extra[k]) headers.set(k, extra[k]); });
    var copy = {};
    Object.keys(init || {}).forEach(function (k) { copy[k] = init[k]; });
    copy.headers = headers;
    if (!copy.credentials) copy.credentials = "include";
    return copy;
  }

  function queueRequired(resp) {
    if (resp.status !== 503) return Promise.resolve(null);
    return resp.clone().json().then(function (body) {
      return body && body.code === "QUEUE_REQUIRED" ? body : null;
    }, function () { return null; });
  }

  function status(room, ticket, options) {
    var url = (options.base || "") + PREFIX + "status?room=" + encodeURIComponent(room);
    var headers = { "Accept": "application/json" };
    if (ticket) headers["X-Anteroom-Ticket"] = ticket;
    return fetch(url, { headers: headers, credentials: "include", cache: "no-store", signal: options.signal })
      .then(function (r) {
        if (r.status === 429) return { state: "limited", retryAfterMs: 1000 * (Number(r.headers.get("Retry-After")) || 5) };
        return r.json();
      });
  }

  // The event stream at /__anteroom/events (same origin, ticket cookie):
  // news as it comes, and a wake-up the moment the visitor's turn comes.
  function listen(room, options, onNews, onTurn) {
    if (options.base || typeof EventSource === "undefined") return null;
    var stream = new EventSource(PREFIX + "events?room=" + encodeURIComponent(room));
    stream.heard = false;
    stream.addEventListener("status", function (e) {
      var s;
      try { s = JSON.parse(e.data); } catch (err) { return; }
      stream.heard = true;
      if (s.state === "queued") onNews(s); else { stream.close(); onTurn(); }
    });
    stream.onerror = function () { stream.close(); stream.failed = true; onTurn(); };
    if (options.signal) options.signal.addEventListener("abort", function () { stream.close(); }, { once: true });
    return stream;
  }

  // Polls a ticket until its visitor is let in; resolves to the last status.
  // While the event stream is open it keeps the place and says when to
  // poll; the polls are then only a safety net.
  function waitTurn(body, options) {
    var ticket = body.ticket, room = body.room, failures = 0, wake = null;
    var onNews = function (s) { if (options.onWait) options.onWait(s); };
    var onTurn = function () { if (wake) wake(); };
    var stream = listen(room, options, onNews, onTurn);
    function pause(ms) {
      var streaming = stream && stream.heard && !stream.failed;
      return Promise.race([
        sleep(jitter(streaming ? ms * 4 : ms), options.signal),
        new Promise(function (resolve) { wake = resolve; }),
      ]);
    }
    function next(ms) {
      return pause(ms).then(function () {
        return status(room, ticket, options).then(function (s) {
          failures = 0;
          if (s.state === "admitted") { if (stream) stream.close(); if (s.pass) pass = s.pass; return s; }
          if (s.ticket) ticket = s.ticket;
          if (s.state === "expired") { if (stream) stream.close(); throw new Error("anteroom: the place in line expired"); }
          if (options.onWait) options.onWait(s);
          // A stream that worked and ended (its time was up): a new one.
          if (stream && stream.failed && stream.heard) stream = listen(room, options, onNews, onTurn);
          return next(s.pollAfterMs || s.retryAfterMs || body.pollAfterMs || 5000);
        }, function (e) {
          if (options.signal && options.signal.aborted) throw e;
          failures += 1;
          return next(Math.min(1000 * Math.pow(2, failures), 60000));
        });
      });
    }
    if (options.onWait) options.onWait(body);
    return next(body.pollAfterMs || 2000);
  }

  function gatedFetch(url, init, options) {
    options = options || {};
    var send = function () {
      return fetch(url, withHeaders(init, { "Accept": "application/json", "X-Anteroom-Pass": pass }));
    };
    return send().then(function again(resp) {
      return queueRequired(resp).then(function (body) {
        if (!body) return resp;
        if (body.ticket) return waitTurn(body, options).then(send).then(again);
        // A requests room: no line to hold a place in; come back when told.
        var ms = body.retryAfterMs || 1000 * (Number(resp.headers.get("Retry-After")) || 1);
        if (options.onWait) options.onWait({ state: "retrying", room: body.room, retryAfterMs: ms });
        return sleep(jitter(ms), options.signal).then(send).then(again);
      });
    });
  }

  global.Anteroom = {
    fetch: gatedFetch,
    status: function (room, options) { return status(room, null, options || {}); },
  };
})(typeof window !== "undefined" ? window : this);
