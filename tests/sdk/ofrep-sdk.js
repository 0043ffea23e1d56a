// Evaluates the e2e flag set through the stock OpenFeature server SDK and its OFREP provider,
// unmodified: node ofrep-sdk.js BASE_URL. Prints one JSON object: label -> evaluation details.
'use strict';
const { OpenFeature } = require('@openfeature/server-sdk');
const { OFREPProvider } = require('@openfeature/ofrep-provider');

async function main() {
  const baseUrl = process.argv[2];
  await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl }));
  const client = OpenFeature.getClient();
  const staff = { targetingKey: 'u-1', email: 'a@corp.example' };
  const other = { targetingKey: 'u-2', email: 'x@else.example' };
  const pick = (d) => ({ value: d.value, reason: d.reason, variant: d.variant ?? null, errorCode: d.errorCode ?? null });
  const out = {
    'boolean new-checkout': pick(await client.getBooleanDetails('new-checkout', true, staff)),
    'string banner staff': pick(await client.getStringDetails('banner', 'default', staff)),
    'string banner other': pick(await client.getStringDetails('banner', 'default', other)),
    'number page-size': pick(await client.getNumberDetails('page-size', 0, other)),
    'object theme': pick(await client.getObjectDetails('theme', {}, other)),
    'missing flag': pick(await client.getBooleanDetails('no-such-flag', true, other)),
  };
  console.log(JSON.stringify(out));
  await OpenFeature.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
