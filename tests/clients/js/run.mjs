// fhir-kit-client driven from tests/integration/clients: reads {baseUrl, token, ops} as JSON on stdin,
// runs each operation through the client's own API and writes one outcome per operation on stdout.
// Errors are outcomes too ({status, error}), so the Python side compares them with HAPI's.
import { Client, RESPONSE_KEY } from 'fhir-kit-client';

const input = JSON.parse(await new Promise((resolve) => {
  let text = '';
  process.stdin.on('data', (chunk) => { text += chunk; });
  process.stdin.on('end', () => resolve(text));
}));

const client = new Client({ baseUrl: input.baseUrl, ...(input.token ? { bearerToken: input.token } : {}) });

function summary(bundle) {
  const entries = bundle.entry || [];
  const ref = (e) => `${e.resource.resourceType}/${e.resource.id}`;
  return {
    status: bundle[RESPONSE_KEY] ? bundle[RESPONSE_KEY].status : 200,
    type: bundle.resourceType === 'Bundle' ? bundle.type : bundle.resourceType,
    total: bundle.total ?? null,
    match: entries.filter((e) => e.resource && !(e.search && e.search.mode === 'include')).map(ref),
    include: entries.filter((e) => e.resource && e.search && e.search.mode === 'include').map(ref),
    statuses: entries.filter((e) => e.response).map((e) => e.response.status.split(' ')[0]),
    next: (bundle.link || []).some((l) => l.relation === 'next'),
    pages: 1,
  };
}

async function allPages(first) {
  const pages = [first];
  let bundle = first;
  while ((bundle.link || []).some((l) => l.relation === 'next') && pages.length < 50) {
    bundle = await client.nextPage({ bundle });
    pages.push(bundle);
  }
  const parts = pages.map(summary);
  return {
    ...parts[0],
    match: parts.flatMap((p) => p.match),
    include: parts.flatMap((p) => p.include),
    statuses: parts.flatMap((p) => p.statuses),
    next: parts[parts.length - 1].next,
    pages: pages.length,
  };
}

async function run(op) {
  const options = op.headers ? { headers: op.headers } : {};
  switch (op.kind) {
    case 'capabilities': return summary(await client.capabilityStatement(options));
    case 'read': {
      const r = await client.read({ resourceType: op.type, id: op.id, options });
      return { status: r[RESPONSE_KEY].status, id: `${r.resourceType}/${r.id}`, version: r.meta && r.meta.versionId };
    }
    case 'vread': {
      const r = await client.vread({ resourceType: op.type, id: op.id, version: op.version, options });
      return { status: r[RESPONSE_KEY].status, id: `${r.resourceType}/${r.id}`, version: r.meta && r.meta.versionId };
    }
    case 'search': {
      const searchParams = {};
      for (const [name, value] of op.params) {
        searchParams[name] = name in searchParams ? [].concat(searchParams[name], value) : value;
      }
      const first = await client.search({ resourceType: op.type, searchParams, options: { ...options, postSearch: !!op.post } });
      if (searchParams._count === '0') return { status: first[RESPONSE_KEY].status, total: first.total ?? null };
      return allPages(first);
    }
    case 'history-instance': return summary(await client.history({ resourceType: op.type, id: op.id, options }));
    case 'history-type': return summary(await client.history({ resourceType: op.type, options }));
    case 'transaction': return summary(await client.transaction({ body: op.body, options }));
    case 'batch': return summary(await client.batch({ body: op.body, options }));
    case 'operation': {
      const r = await client.operation({ name: op.name, resourceType: op.type, id: op.id, method: 'get', input: op.input, options });
      return op.pages ? allPages(r) : summary(r);
    }
    case 'kickoff': {
      const headers = { ...options.headers, prefer: 'respond-async', accept: 'application/fhir+json' };
      const r = await client.operation({ name: '$export', resourceType: op.type || undefined, id: op.id || undefined, method: 'get', options: { headers } });
      const response = r[RESPONSE_KEY];
      return { status: response.status, contentLocation: response.headers.get('content-location') };
    }
    default: throw new Error(`unknown operation kind ${op.kind}`);
  }
}

const out = [];
for (const op of input.ops) {
  try {
    out.push(await run(op));
  } catch (err) {
    if (!err.response) throw err;
    out.push({ status: err.response.status });
  }
}
process.stdout.write(JSON.stringify(out));
