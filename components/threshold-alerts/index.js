// Threshold alerts (Node.js): a minute aggregate in, an alert out when the
// window's mean or max is above MEAN_THRESHOLD / MAX_THRESHOLD; null otherwise
// (nothing is published).
"use strict";

function check(event) {
  if (event === null || typeof event !== "object") {
    throw new TypeError("an aggregate is a JSON object");
  }
  for (const field of ["sensor", "window_start"]) {
    if (typeof event[field] !== "string") throw new TypeError(`${field}: not a string`);
  }
  for (const field of ["mean", "max"]) {
    if (typeof event[field] !== "number") throw new TypeError(`${field}: not a number`);
  }
}

exports.handler = async (event, context) => {
  check(event);
  const meanLimit = Number(process.env.MEAN_THRESHOLD || "25");
  const maxLimit = Number(process.env.MAX_THRESHOLD || "40");
  const reasons = [];
  if (event.mean > meanLimit) reasons.push(`mean ${event.mean} > ${meanLimit}`);
  if (event.max > maxLimit) reasons.push(`max ${event.max} > ${maxLimit}`);
  if (reasons.length === 0) return null;
  console.log(`alert for ${event.sensor} at ${event.window_start}: ${reasons.join(", ")}`);
  return {
    sensor: event.sensor,
    window_start: event.window_start,
    reasons,
    request_id: context.awsRequestId,
  };
};
