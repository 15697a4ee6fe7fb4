import { describe, expect, it } from 'vitest';
import { OpenStackError, parseErrorBody, toOpenStackError } from '../../../cloud/errors.ts';

const heatBody = {
  explanation: 'The server could not comply with the request since it is either malformed or otherwise incorrect.',
  code: 400,
  error: { message: 'The Resource Type (OS::No::Such) could not be found.', traceback: 'Traceback (most recent call last): …', type: 'StackValidationFailed' },
  title: 'Bad Request',
};

describe('parseErrorBody', () => {
  it('takes Heat\'s title, message and exception type, and drops the traceback', () => {
    expect(parseErrorBody(400, heatBody)).toEqual({
      title: 'Bad Request',
      explanation: 'The Resource Type (OS::No::Such) could not be found.',
      errorType: 'StackValidationFailed',
    });
  });

  it('reads Keystone\'s {error: {code, title, message}}', () => {
    expect(parseErrorBody(401, { error: { code: 401, title: 'Unauthorized', message: 'The request you have made requires authentication.' } })).toEqual({
      title: 'Unauthorized',
      explanation: 'The request you have made requires authentication.',
      errorType: undefined,
    });
  });

  it('keeps the text of an HTML error page from a proxy, and the HTTP reason when there is no body', () => {
    expect(parseErrorBody(502, '<html><body><h1>502 Bad Gateway</h1>nginx</body></html>')).toEqual({ title: 'Bad Gateway', explanation: '502 Bad Gateway nginx', errorType: undefined });
    expect(parseErrorBody(503, null)).toEqual({ title: 'Service Unavailable', explanation: '', errorType: undefined });
  });
});

describe('toOpenStackError', () => {
  it('makes one E_HEAT error naming the service, the call, the status and Heat\'s reason, with a hint', () => {
    const e = toOpenStackError({ service: 'Heat', method: 'POST', url: 'https://heat/v1/p/validate?x=1' }, { status: 400, body: heatBody });
    expect(e).toBeInstanceOf(OpenStackError);
    expect(e.code).toBe('E_HEAT');
    expect(e.message).toBe('Heat POST https://heat/v1/p/validate: 400 Bad Request — StackValidationFailed: The Resource Type (OS::No::Such) could not be found.');
    expect(e.hint).toMatch(/fix what the message names/);
    expect(e.retryable).toBe(false);
    expect(e.message).not.toContain('Traceback');
  });

  it('marks server errors, rate limits and busy stacks retryable, and nothing else', () => {
    const ctx = { service: 'Heat' as const, method: 'GET', url: 'https://h' };
    expect(toOpenStackError(ctx, { status: 503, body: null }).retryable).toBe(true);
    expect(toOpenStackError(ctx, { status: 429, body: null }).retryable).toBe(true);
    expect(toOpenStackError(ctx, { status: 409, body: { error: { message: 'Stack s is in progress' } } }).retryable).toBe(true);
    const taken = toOpenStackError(ctx, { status: 409, body: { error: { message: 'The Stack (s) already exists.' } } });
    expect(taken.retryable).toBe(false);
    expect(taken.hint).toMatch(/name is taken/);
    expect(toOpenStackError(ctx, { status: 404, body: null }).retryable).toBe(false);
  });

  it('uses the caller\'s hint for a status when it has one', () => {
    const e = toOpenStackError({ service: 'Heat', method: 'GET', url: 'https://h', hints: { 404: 'there is no stack x' } }, { status: 404, body: null });
    expect(e.hint).toBe('there is no stack x');
  });

  it('points a 401 at the credentials', () => {
    expect(toOpenStackError({ service: 'Keystone', method: 'POST', url: 'https://k/v3/auth/tokens' }, { status: 401, body: null }).hint).toMatch(/OS_AUTH_URL and the credentials/);
  });
});
