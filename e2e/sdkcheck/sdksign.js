#!/usr/bin/env node
// sdksign.js: re-sign recorded HTTP requests with Microsoft's own ACS HMAC
// policy, createCommunicationAccessKeyCredentialPolicy from
// @azure/communication-common (the version pinned in package.json beside this
// file). Run by e2e/sdk_test.go (go test -tags sdkcheck -run SDK ./e2e).
//
// stdin:  JSON lines {"method","url","headers":{...},"bodyBase64","key"}
//         url = "<scheme>://<Host header as received><request-target as received>"
//         headers: values may be strings or arrays of strings (Go http.Header);
//         only x-ms-date (any case) is read, and it is required.
// stdout: one JSON line per non-blank input line, in order:
//         {"authorization","xMsContentSha256","xMsDate","host","dateRoundTrips",
//          "sdkView":{"pathAndQuery","host","bodyUtf8RoundTrips"},"comparable"}
//         or {"error": "..."} for an input that could not be signed.
//         authorization/xMsContentSha256/xMsDate/host are the headers the SDK
//         policy set. sdkView is NOT from the policy: it is what this script
//         computes with the same expressions the policy uses (new URL(url):
//         pathname + "?" + searchParams.toString(), url.host; body.toString()),
//         compared with the recorded request-target/Host/body. comparable is
//         true when the SDK sees exactly what was sent, i.e. when the SDK's
//         signature must equal the recorded one (the Host checked is the one
//         the policy set, so SDK versions that double the port are caught).
//
// Date control: the policy calls `new Date().toUTCString()` itself. While each
// request is being signed, globalThis.Date is replaced by a subclass whose
// zero-argument constructor (and Date.now) yield the recorded x-ms-date; the
// real Date is restored afterwards. Inputs are processed strictly one at a
// time, so no two signings overlap. The x-ms-date the policy actually set is
// echoed back (xMsDate) so the caller can see the override took effect.
"use strict";

const readline = require("node:readline");
const { createPipelineRequest, createHttpHeaders } = require("@azure/core-rest-pipeline");
const { AzureKeyCredential } = require("@azure/core-auth");
const { createCommunicationAccessKeyCredentialPolicy } = require("@azure/communication-common");

const RealDate = Date;

async function withFixedDate(ms, fn) {
  class FixedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(ms);
      else super(...args);
    }
    static now() {
      return ms;
    }
  }
  globalThis.Date = FixedDate;
  try {
    return await fn();
  } finally {
    globalThis.Date = RealDate;
  }
}

function headerValue(headers, name) {
  if (!headers) return undefined;
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() === name) return Array.isArray(v) ? v[0] : v;
  }
  return undefined;
}

async function signOne(input) {
  const { method, url, headers, bodyBase64, key } = input;
  if (typeof method !== "string" || typeof url !== "string" || typeof key !== "string") {
    throw new Error("method, url and key must be strings");
  }
  const recordedDate = headerValue(headers, "x-ms-date");
  if (typeof recordedDate !== "string") throw new Error("no x-ms-date header in the input");
  const ms = RealDate.parse(recordedDate);
  if (Number.isNaN(ms)) throw new Error(`x-ms-date ${JSON.stringify(recordedDate)} does not parse`);

  // The body as the SDK would get it from a caller holding bytes: a Buffer.
  // (The policy hashes request.body.toString(), i.e. the UTF-8 decoding.)
  const body = bodyBase64 ? Buffer.from(bodyBase64, "base64") : undefined;
  const request = createPipelineRequest({ url, method, body, headers: createHttpHeaders() });

  const policy = createCommunicationAccessKeyCredentialPolicy(new AzureKeyCredential(key));
  let captured;
  const next = async (req) => {
    captured = req;
    return { request: req, status: 200, headers: createHttpHeaders() };
  };
  await withFixedDate(ms, () => policy.sendRequest(request, next));
  if (!captured) throw new Error("policy did not call next");

  const h = captured.headers;
  const xMsDate = h.get("x-ms-date");

  // What the policy signs, recomputed with the policy's own expressions.
  const u = new URL(url);
  const q = u.searchParams.toString();
  const sdkPathAndQuery = q ? `${u.pathname}?${q}` : u.pathname;
  const sentTarget = url.slice(url.indexOf("//") + 2).replace(/^[^/?]*/, "");
  const sentHost = url.slice(url.indexOf("//") + 2, url.length - sentTarget.length);
  const bodyUtf8RoundTrips = !body || Buffer.from(body.toString(), "utf8").equals(body);
  return {
    authorization: h.get("authorization"),
    xMsContentSha256: h.get("x-ms-content-sha256"),
    xMsDate,
    host: h.get("host"),
    dateRoundTrips: xMsDate === recordedDate,
    sdkView: { pathAndQuery: sdkPathAndQuery, host: u.host, bodyUtf8RoundTrips },
    comparable:
      xMsDate === recordedDate && sdkPathAndQuery === sentTarget && h.get("host") === sentHost && bodyUtf8RoundTrips,
  };
}

async function main() {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (line.trim() === "") continue;
    let out;
    try {
      out = await signOne(JSON.parse(line));
    } catch (e) {
      out = { error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(out) + "\n");
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
