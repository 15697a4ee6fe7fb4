import { describe, expect, it } from 'vitest';
import { parseAuthConfig } from '../../../cloud/auth-config.ts';
import { OpenStackError } from '../../../cloud/errors.ts';
import { HeatClient, toEvent, toResource, type StackEvent } from '../../../cloud/heat-client.ts';
import type { HttpRequest, HttpResponse, Transport } from '../../../cloud/http.ts';
import { KeystoneSession } from '../../../cloud/keystone.ts';

/**
 * The client's own logic — re-authentication, redirects, waiting — over a scripted transport: each test
 * states what the far end answers, in order. Heat itself is exercised by test/integration/heat-client.test.ts.
 */
const HEAT = 'https://heat.example/v1/p1';
const config = parseAuthConfig({ OS_AUTH_URL: 'https://keystone.example/v3', OS_APPLICATION_CREDENTIAL_ID: 'id', OS_APPLICATION_CREDENTIAL_SECRET: 'secret' });

function res(status: number, body: unknown = null, headers: Record<string, string> = {}): HttpResponse {
  return { status, body, headers: new Headers(headers) };
}

let tokens = 0;
function tokenResponse(): HttpResponse {
  tokens++;
  return res(201, {
    token: {
      expires_at: new Date(Date.now() + 3600_000).toISOString(),
      user: { id: 'u', name: 'u' },
      project: { id: 'p1', name: 'p' },
      catalog: [{ type: 'orchestration', name: 'heat', endpoints: [{ interface: 'public', region_id: 'R', url: HEAT }] }],
    },
  }, { 'X-Subject-Token': `token-${tokens}` });
}

/** A transport answering Keystone logins itself and Heat calls from `answers`, recording what was sent. */
function scripted(answers: ((req: HttpRequest) => HttpResponse)[]): { transport: Transport; sent: HttpRequest[] } {
  const sent: HttpRequest[] = [];
  const transport: Transport = async (req) => {
    sent.push(req);
    if (req.url.endsWith('/auth/tokens')) return tokenResponse();
    const next = answers.shift();
    if (!next) throw new Error(`unexpected ${req.method} ${req.url}`);
    return next(req);
  };
  return { transport, sent };
}

async function client(answers: ((req: HttpRequest) => HttpResponse)[]) {
  const { transport, sent } = scripted(answers);
  const session = await KeystoneSession.open(config, transport);
  return { heat: new HeatClient(session, { transport }), sent };
}

const stackBody = (status: string, extra: Record<string, unknown> = {}) => () =>
  res(200, { stack: { id: 'sid', stack_name: 's', stack_status: status, stack_status_reason: '', outputs: [], parameters: {}, ...extra } });
const eventsBody = (events: { id: string; status: string; name?: string }[]) => () =>
  res(200, { events: events.map((e) => ({ id: e.id, event_time: '2030-01-01T00:00:01Z', resource_name: e.name ?? 's', resource_status: e.status, resource_status_reason: '' })) });

describe('HeatClient', () => {
  it('sends the token from X-Subject-Token and uses the catalog\'s orchestration endpoint', async () => {
    const { heat, sent } = await client([() => res(200, { stacks: [] })]);
    await heat.call('GET', '/stacks');
    expect(sent.at(-1)).toMatchObject({ method: 'GET', url: `${HEAT}/stacks`, headers: { 'X-Auth-Token': 'token-' + tokens } });
  });

  it('re-authenticates once on a 401 and repeats the call with the new token', async () => {
    const { heat, sent } = await client([() => res(401), () => res(200, { stacks: [] })]);
    const before = tokens;
    await heat.call('GET', '/stacks');
    expect(tokens).toBe(before + 1);
    const heatCalls = sent.filter((r) => r.url.startsWith(HEAT));
    expect(heatCalls.map((r) => r.headers?.['X-Auth-Token'])).toEqual([`token-${before}`, `token-${before + 1}`]);
  });

  it('gives up after the second 401 with E_HEAT and a credentials hint', async () => {
    const { heat } = await client([() => res(401), () => res(401, { error: { code: 401, title: 'Unauthorized', message: 'no' } })]);
    const err = await heat.call('GET', '/stacks').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenStackError);
    expect((err as OpenStackError).status).toBe(401);
    expect((err as OpenStackError).hint).toMatch(/credentials/);
    expect((err as OpenStackError).message).not.toContain('token-');
  });

  it('resolves a stack name through Heat\'s 302 to name and id on its own endpoint', async () => {
    const { heat, sent } = await client([
      () => res(302, null, { Location: 'http://internal:8004/v1/p1/stacks/my-stack/1234-abcd' }),
      stackBody('CREATE_COMPLETE', { id: '1234-abcd', stack_name: 'my-stack' }),
    ]);
    const s = await heat.showStack('my-stack');
    expect(s).toMatchObject({ name: 'my-stack', id: '1234-abcd', status: 'CREATE_COMPLETE' });
    expect(sent.at(-1)!.url).toBe(`${HEAT}/stacks/my-stack/1234-abcd`);
  });

  it('waits past a stale UPDATE_COMPLETE until this update\'s events arrive, streaming each event once', async () => {
    const delays: number[] = [];
    const seen: StackEvent[] = [];
    const { heat } = await client([
      eventsBody([]), stackBody('UPDATE_COMPLETE'), // the previous update's status: not ours
      eventsBody([{ id: 'e1', status: 'UPDATE_IN_PROGRESS' }]), stackBody('UPDATE_IN_PROGRESS'),
      eventsBody([]), stackBody('UPDATE_IN_PROGRESS'),
      eventsBody([{ id: 'e2', status: 'UPDATE_COMPLETE' }]), stackBody('UPDATE_COMPLETE'),
      eventsBody([]), // flush
      stackBody('UPDATE_COMPLETE', { outputs: [{ output_key: 'ip', output_value: '10.0.0.1' }] }),
    ]);
    const s = await heat.waitForStack({ name: 's', id: 'sid' }, 'UPDATE', {
      sinceEventId: 'e0',
      onEvent: (e) => seen.push(e),
      sleep: async (ms) => void delays.push(ms),
    });
    expect(s.status).toBe('UPDATE_COMPLETE');
    expect(s.outputs).toEqual([{ key: 'ip', value: '10.0.0.1', description: '', error: undefined }]);
    expect(seen.map((e) => e.id)).toEqual(['e1', 'e2']);
    expect(delays).toEqual([1000, 1000, 1500]);
  });

  it('passes the event marker so no event is streamed twice', async () => {
    const { heat, sent } = await client([
      eventsBody([{ id: 'e1', status: 'CREATE_IN_PROGRESS' }]), stackBody('CREATE_IN_PROGRESS'),
      eventsBody([{ id: 'e2', status: 'CREATE_COMPLETE' }]), stackBody('CREATE_COMPLETE'),
      eventsBody([]), stackBody('CREATE_COMPLETE'),
    ]);
    await heat.waitForStack({ name: 's', id: 'sid' }, 'CREATE', { sleep: async () => {} });
    const markers = sent.filter((r) => r.url.includes('/events')).map((r) => new URL(r.url).searchParams.get('marker'));
    expect(markers).toEqual([null, 'e1', 'e2']);
  });

  it('counts a 404 while waiting for a delete as the stack being gone', async () => {
    const { heat } = await client([eventsBody([]), () => res(404, { error: { message: 'The Stack (s) could not be found.' } })]);
    expect((await heat.waitForStack({ name: 's', id: 'sid' }, 'DELETE', { sleep: async () => {} })).status).toBe('DELETE_COMPLETE');
  });

  it('gives up waiting after timeoutMs with a retryable E_HEAT that says the stack goes on', async () => {
    const { heat } = await client([eventsBody([]), stackBody('CREATE_IN_PROGRESS')]);
    const err = await heat.waitForStack({ name: 's', id: 'sid' }, 'CREATE', { timeoutMs: 0, sleep: async () => {} }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_HEAT', retryable: true, message: 'stack s is still CREATE_IN_PROGRESS after 0 s' });
  });

  it('stops waiting when aborted', async () => {
    const controller = new AbortController();
    const { heat } = await client([eventsBody([]), stackBody('CREATE_IN_PROGRESS')]);
    const err = await heat.waitForStack({ name: 's', id: 'sid' }, 'CREATE', {
      signal: controller.signal,
      sleep: async () => controller.abort(new Error('stop')),
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe('stop');
  });

  it('accepts Heat\'s null body after a signal', async () => {
    const { heat, sent } = await client([() => res(200, null)]);
    expect(await heat.signal({ name: 's', id: 'sid' }, 'wait handle', { status: 'SUCCESS' })).toBeNull();
    expect(sent.at(-1)).toMatchObject({ method: 'POST', url: `${HEAT}/stacks/s/sid/resources/wait%20handle/signal`, body: { status: 'SUCCESS' } });
  });
});

describe('Heat JSON mapping', () => {
  it('reads a nested resource\'s own stack, its nested stack and its parent', () => {
    expect(toResource({
      resource_name: 'boot', resource_type: 'OS::Heat::WaitCondition', resource_status: 'CREATE_COMPLETE', physical_resource_id: '',
      parent_resource: 'server',
      links: [
        { rel: 'self', href: `${HEAT}/stacks/s-server-x/nid/resources/boot` },
        { rel: 'stack', href: `${HEAT}/stacks/s-server-x/nid` },
      ],
    })).toEqual({
      name: 'boot', type: 'OS::Heat::WaitCondition', status: 'CREATE_COMPLETE', statusReason: '', physicalId: '',
      stack: { name: 's-server-x', id: 'nid' }, nested: undefined, parentResource: 'server',
    });
  });

  it('reads an event\'s resource, status and reason', () => {
    expect(toEvent({ id: 'e', event_time: 't', resource_name: 'wch', physical_resource_id: 'p', resource_status: 'SIGNAL_COMPLETE', resource_status_reason: 'Signal: status:SUCCESS' })).toEqual({
      id: 'e', time: 't', resourceName: 'wch', physicalResourceId: 'p', status: 'SIGNAL_COMPLETE', statusReason: 'Signal: status:SUCCESS',
    });
  });
});
