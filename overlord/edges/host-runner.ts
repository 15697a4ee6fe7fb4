/**
 * The seam between the overlord and the machines it deploys: run one command, given as an argv array, on
 * one machine. The SSH implementation quotes argv in exactly one place; nothing else builds shell strings.
 * The benchmark's simulated runner implements the same interface.
 */
export interface HostTarget {
  /** machine id (the key of its record) */
  readonly id: string;
  readonly ip: string;
  /** host public key to pin (`ssh-ed25519 AAAA…`); absent = trust on first use, recorded in etcd */
  readonly hostKey?: string;
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecOptions {
  /** bytes fed to the command's stdin (file contents; never logged) */
  readonly stdin?: string;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface HostRunner {
  /**
   * Runs argv on the machine and resolves with its exit code — a non-zero exit is a result, not an error.
   * Rejects with CorekubeError E_SSH (retryable: unreachable, refused, timed out) or E_SSH_HOSTKEY
   * (terminal until the operator acts: the machine's host key is not the pinned one).
   */
  exec(target: HostTarget, argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  /** Closes the connection to one machine, or all of them. */
  close(id?: string): Promise<void>;
}
