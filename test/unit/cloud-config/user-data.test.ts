import { describe, expect, it } from 'vitest';
import { bootPlan, BOOT_ROLES, bootUnits, fillPlaceholders, placeholdersIn, renderUserData, type BootRole } from '../../../cloud-config/index.ts';
import { CONFIG_DIR, configPath, MACHINE_PATHS } from '../../../cloud-config/machine-paths.ts';
import { PLACEHOLDERS, type PlaceholderName } from '../../../cloud-config/placeholders.ts';
import { UBUNTU_TOP_LEVEL_KEYS } from '../../../cloud-config/ubuntu.ts';
import { parseYaml } from '../../../core/yaml.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { FLATCAR_UPDATE_CONF, IGNITION_VERSION } from '../../../cloud-config/ignition.ts';
import { CA_PEM, CASES, fileAt, FILLED, machineView, OSES, parse11, parse12, specFor, SSH_KEY_LINE, type IgnitionDoc } from './fixtures.ts';

/** Which placeholders each role's user_data carries: the contract the Heat template's str_replace follows. */
const EXPECTED_PLACEHOLDERS: Record<BootRole, PlaceholderName[]> = {
  discovery: ['overlordSshKey', 'readyUrl', 'readyToken'],
  // with the OpenStack cloud provider (the default): the stack user that reads the cloud credentials from Heat
  overlord: ['joinToken', 'overlordSecret', 'readyUrl', 'readyToken', 'clusterReadyUrl', 'clusterReadyToken', 'cloudAuthUrl', 'cloudUserId', 'cloudPassword', 'cloudProjectId', 'cloudStackId', 'cloudRegion', 'masterCount', 'minionCount'],
  'overlord-standby': ['joinToken', 'overlordSecret', 'discoveryCa', 'masterCount', 'minionCount'],
  master: ['joinToken', 'overlordSshKey', 'discoveryCa'],
  minion: ['joinToken', 'overlordSshKey', 'discoveryCa'],
};

describe.each(CASES)('$role user_data on $os', ({ role, os }) => {
  const spec = specFor(os);
  const text = renderUserData(role, spec);
  const view = machineView(text);
  const plan = bootPlan(role, spec);
  const atBoot = bootUnits(plan).map((u) => u.name);

  it('holds no credential other than placeholders, and secrets only in 0600 files', () => {
    const readable = view.files.map((f) => f.content).join('\n') + view.units.map((u) => u.content).join('\n');
    expect(readable).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE|ssh-(ed25519|rsa) AAAA|X-Auth-Token: [^%<]/);
    for (const f of view.files) {
      const secret = [PLACEHOLDERS.joinToken, PLACEHOLDERS.overlordSecret, PLACEHOLDERS.readyToken, PLACEHOLDERS.clusterReadyToken].some((t) => f.content.includes(t));
      if (secret) expect(f.permissions, f.path).toBe('0600');
    }
  });

  it('carries exactly the placeholders of its role', () => {
    expect(placeholdersIn(text)).toEqual(EXPECTED_PLACEHOLDERS[role]);
  });

  it('gives user corekube passwordless sudo', () => {
    expect(fileAt(view, MACHINE_PATHS.sudoers)).toMatchObject({ permissions: '0440', content: 'corekube ALL=(ALL) NOPASSWD:ALL\n' });
    expect(JSON.stringify(view.users)).toContain('"name":"corekube"');
  });

  it('writes every unit of its plan, enabling those started at boot and only those', () => {
    expect(view.units.map((u) => u.name)).toEqual(plan.units.map((u) => u.name));
    expect(view.units.filter((u) => u.enabled).map((u) => u.name)).toEqual(atBoot);
    for (const u of view.units) expect(u.content).toBe(plan.units.find((p) => p.name === u.name)!.content);
  });

  it('writes every file of its plan with its mode and content', () => {
    for (const f of plan.files) expect(fileAt(view, f.path), f.path).toEqual({ path: f.path, permissions: f.mode, content: f.base64 ? f.content.trim() : f.content });
  });

  it('is well under the Nova user_data limit', () => {
    expect(Buffer.byteLength(text)).toBeLessThan(32 * 1024);
  });

  it('writes every script its units run (etcd itself is downloaded by corekube-install-etcd)', () => {
    const written = new Set(plan.files.map((f) => f.path));
    for (const u of plan.units) {
      for (const m of u.content.matchAll(/^Exec\w+=-?(\/opt\/corekube\/bin\/[\w-]+)/gm)) {
        const bin = m[1]!;
        if (bin === `${MACHINE_PATHS.binDir}/etcd`) expect(written.has(`${MACHINE_PATHS.binDir}/corekube-install-etcd`)).toBe(true);
        else expect(written.has(bin), `${u.name} runs ${bin}`).toBe(true);
      }
    }
  });

  if (os === 'flatcar') {
    const doc = JSON.parse(text) as IgnitionDoc;

    it('is an Ignition 3.3.0 config on one line, as Butane writes it', () => {
      expect(text).not.toContain('\n');
      expect(doc.ignition).toEqual({ version: IGNITION_VERSION });
      expect(Object.keys(doc).sort()).toEqual(['ignition', 'passwd', 'storage', 'systemd']);
    });

    it('matches its snapshot', async () => {
      await expect(`${JSON.stringify(doc, null, 2)}\n`).toMatchFileSnapshot(`__snapshots__/${role}-${os}.ign.json`);
    });

    it('puts each placeholder token alone in the data of a data URL, the way Heat fills it', () => {
      for (const name of placeholdersIn(text)) {
        const token = PLACEHOLDERS[name];
        const around = [...text.matchAll(new RegExp(`"([^"]*)${token}([^"]*)"`, 'g'))].map((m) => [m[1], m[2]]);
        expect(around.length, name).toBeGreaterThan(0);
        for (const [before, after] of around) {
          expect(['data:,', 'data:;base64,']).toContain(before);
          expect(after).toBe('');
        }
      }
    });

    it('writes units through systemd, not files, and turns off reboots for updates', () => {
      expect(view.files.some((f) => f.path.startsWith(`${MACHINE_PATHS.unitDir}/`))).toBe(false);
      expect(fileAt(view, FLATCAR_UPDATE_CONF)).toMatchObject({ permissions: '0644', content: 'REBOOT_STRATEGY=off\n' });
      for (const f of doc.storage.files) expect(f.overwrite).toBe(true);
    });
  } else {
    const doc = parse12(text);

    it('is a #cloud-config document that YAML 1.1 readers (cloud-init) read the same way', () => {
      expect(text.startsWith('#cloud-config\n')).toBe(true);
      expect(() => parseYaml(text)).not.toThrow();
      expect(parse11(text)).toEqual(doc);
    });

    it('matches its snapshot', async () => {
      await expect(text).toMatchFileSnapshot(`__snapshots__/${role}-${os}.yaml`);
    });

    it('puts each placeholder token alone on a block-scalar line', () => {
      for (const name of placeholdersIn(text)) {
        for (const line of text.split('\n').filter((l) => l.includes(PLACEHOLDERS[name]))) {
          // alone on a line of a block scalar, after a fixed header prefix, or in quotes inside overlord.yaml
          expect(line).toMatch(/^\s+(X-Auth-Token: )?%%COREKUBE_[A-Z_]+%%$|^\s+\w+: "%%COREKUBE_[A-Z_]+%%"$/);
        }
      }
    });

    it('uses only cloud-init keys of its known set; writes units and starts them without blocking cloud-init', () => {
      expect(Object.keys(doc).every((k) => (UBUNTU_TOP_LEVEL_KEYS as readonly string[]).includes(k))).toBe(true);
      expect(doc.runcmd).toEqual([
        ['systemctl', 'daemon-reload'],
        ['systemctl', 'enable', ...atBoot],
        ['systemctl', 'start', '--no-block', ...atBoot],
      ]);
      expect((doc.users as unknown[])[0]).toBe('default');
      if (role === 'overlord' || role === 'overlord-standby') expect(doc.packages).toEqual(['docker.io']);
      else expect(doc).not.toHaveProperty('packages');
    });
  }
});

describe('filling the placeholders', () => {
  it.each(CASES)('keeps the $role user_data on $os valid with every value intact', ({ role, os }) => {
    const text = fillPlaceholders(renderUserData(role, specFor(os)), FILLED);
    if (os === 'ubuntu') expect(parse11(text)).toEqual(parse12(text));
    else expect(() => JSON.parse(text)).not.toThrow();
    const view = machineView(text);
    for (const f of view.files) expect(f.content).not.toContain('%%COREKUBE_');
    if (role !== 'overlord' && role !== 'overlord-standby') {
      expect(fileAt(view, configPath('overlordSshKey')).content).toBe(SSH_KEY_LINE);
    }
    if (role === 'master' || role === 'minion' || role === 'overlord-standby') {
      expect(fileAt(view, configPath('discoveryCa')).content).toBe(CA_PEM);
      expect(fileAt(view, configPath('joinToken')).content).toBe(`${FILLED.joinToken}\n`);
    }
    if (role === 'overlord' || role === 'overlord-standby') {
      expect(fileAt(view, configPath('overlordSecret'))).toMatchObject({ permissions: '0600', content: `${FILLED.overlordSecret}\n` });
    } else {
      expect(view.files.some((f) => f.content.includes(FILLED.overlordSecret)), 'only overlords hold the overlord secret').toBe(false);
    }
    if (role === 'discovery' || role === 'overlord') {
      expect(fileAt(view, configPath('readyUrl')).content).toBe(`${FILLED.readyUrl}\n`);
      expect(fileAt(view, configPath('readyHeader')).content).toBe(`X-Auth-Token: ${FILLED.readyToken}\n`);
    }
    if (role === 'overlord') {
      expect(fileAt(view, configPath('clusterReadyHeader')).content).toBe(`X-Auth-Token: ${FILLED.clusterReadyToken}\n`);
      const config = parseYaml(fileAt(view, configPath('overlordConfig')).content) as Record<string, unknown>;
      expect([config.masters, config.minions]).toEqual(['3', '50']);
    }
  });

  it('refuses a value that is not base64 where an Ignition config decodes base64, naming the placeholder', () => {
    const text = renderUserData('minion', specFor('flatcar'));
    expect(() => fillPlaceholders(text, { ...FILLED, discoveryCa: CA_PEM.replace(/\n/g, ' ') })).toThrow(/placeholder discoveryCa must be base64/);
  });
});

describe('user_data and the counts', () => {
  it.each(BOOT_ROLES)('the %s user_data does not change when only the master or minion count changes', (role) => {
    for (const os of OSES) {
      for (const lb of ['octavia', 'node-local', 'none']) {
        const small = renderUserData(role, specFor(os, { masters: '1', minions: '0', 'api-load-balancer': lb }));
        const large = renderUserData(role, specFor(os, { masters: '5', minions: '500', 'api-load-balancer': lb }));
        expect(large).toBe(small);
        expect(small).not.toContain('%index%');
      }
    }
  });

  it("writes the API endpoint the template was generated with into the overlord's spec: the default follows the masters at generation", () => {
    const endpoint = (masters: string) => (parseYaml(fileAt(machineView(renderUserData('overlord', specFor('ubuntu', { masters }))), configPath('overlordConfig')).content) as Record<string, unknown>).apiLoadBalancer;
    expect(endpoint('1')).toBe('none');
    expect(endpoint('3')).toBe('octavia');
  });
});

describe('the overlord configuration file', () => {
  const spec = specFor('ubuntu', { 'admin-cidr': '203.0.113.0/24', 'dns-nameservers': '1.1.1.1,9.9.9.9', masters: '3', minions: '7' });
  const text = fileAt(machineView(renderUserData('overlord', spec)), configPath('overlordConfig')).content;

  it('is the cluster spec in -c format, with the initial counts as placeholders', () => {
    const config = parseYaml(text) as Record<string, unknown>;
    expect(config.masters).toBe(PLACEHOLDERS.masterCount);
    expect(config.minions).toBe(PLACEHOLDERS.minionCount);
    expect(config.name).toBe('demo');
  });

  it('gives the same spec back to parseClusterSpec once Heat filled the counts', () => {
    const filled = parseYaml(fillPlaceholders(text, { masterCount: '3', minionCount: '7' }));
    expect(parseClusterSpec({ file: filled })).toEqual(spec);
  });

  it('names the addresses and where the secrets are, but holds no secret', () => {
    expect(text).toContain('# discovery https://10.240.0.10:2379');
    expect(text).toContain(`${CONFIG_DIR}/secrets/join-token`);
    expect(text).not.toContain(PLACEHOLDERS.joinToken);
  });

  it('runs the spec image as the overlord container with docker, restarting it forever', () => {
    const unit = bootPlan('overlord', spec).units.find((u) => u.name === 'overlord.service')!.content;
    expect(unit).toContain('ExecStart=/usr/bin/docker run --name overlord --rm --network host');
    expect(unit).toContain(`${spec.overlord.image} overlord --config /etc/corekube/overlord.yaml`);
    expect(unit).toContain('-v /etc/corekube:/etc/corekube:ro');
    expect(unit).toMatch(/^ExecStartPre=-\/usr\/bin\/docker rm --force overlord$/m);
    expect(unit).toMatch(/^Restart=always$/m);
  });

  it("gives the image's user (10001) its state directory and the 0600 files it reads, and serves /healthz", () => {
    const unit = bootPlan('overlord', spec).units.find((u) => u.name === 'overlord.service')!.content;
    const pre = unit.split('\n').filter((l) => l.startsWith('ExecStartPre='));
    expect(pre).toEqual([
      'ExecStartPre=-/usr/bin/docker rm --force overlord',
      'ExecStartPre=/usr/bin/install -d -o 10001 -g 10001 -m 0700 /var/lib/corekube',
      'ExecStartPre=/usr/bin/chown -R 10001:10001 /var/lib/corekube',
      'ExecStartPre=/usr/bin/chown 10001:10001 /etc/corekube/secrets/join-token /etc/corekube/secrets/overlord-secret /etc/corekube/heat/ready.header /etc/corekube/heat/cluster-ready.header /etc/corekube/heat/cloud/password',
    ]);
    // a StateDirectory= would hand the directory back to root at every start
    expect(unit).not.toContain('StateDirectory');
    expect(unit).toMatch(/overlord --config \/etc\/corekube\/overlord.yaml --health-port 8740$/m);
  });
});

describe('a standby overlord server', () => {
  const spec = specFor('flatcar');
  const plan = bootPlan('overlord-standby', spec);
  const unit = plan.units.find((u) => u.name === 'overlord.service')!.content;

  it('runs the same overlord container with --standby, giving it the join token and the overlord secret', () => {
    expect(unit).toContain(`${spec.overlord.image} overlord --config /etc/corekube/overlord.yaml --health-port 8740 --standby`);
    expect(unit.split('\n').filter((l) => l.startsWith('ExecStartPre=/usr/bin/chown 10001:10001 '))).toEqual([
      'ExecStartPre=/usr/bin/chown 10001:10001 /etc/corekube/secrets/join-token /etc/corekube/secrets/overlord-secret',
    ]);
  });

  it('gets the discovery CA and no Heat handle: it signals nothing', () => {
    const paths = plan.files.map((f) => f.path);
    expect(paths).toContain(configPath('discoveryCa'));
    expect(paths.filter((p) => p.includes('/heat/'))).toEqual([]);
    expect(placeholdersIn(renderUserData('overlord-standby', spec))).not.toContain('readyUrl');
  });

  it('differs from the bootstrap overlord only in its files and that flag', () => {
    const bootstrap = bootPlan('overlord', spec).units.find((u) => u.name === 'overlord.service')!.content;
    const strip = (u: string) => u.replace(/ --standby/, '').split('\n').filter((l) => !l.startsWith('#') && !l.startsWith('ExecStartPre=/usr/bin/chown 10001:10001 /etc'));
    expect(strip(unit)).toEqual(strip(bootstrap));
  });
});

describe('the announce script', () => {
  const script = (role: 'master' | 'minion') => bootPlan(role, specFor('flatcar')).files.find((f) => f.path.endsWith('/corekube-announce'))!.content;

  it('announces under the cluster prefix, as its role, to discovery over https with a 60 s lease renewed every 20 s', () => {
    const s = script('minion');
    expect(s).toContain("role='minion'");
    expect(s).toContain("machines_prefix='/corekube/demo/machines/'");
    expect(s).toContain("default_discovery_ip='10.240.0.10'");
    expect(s).toContain("default_discovery_port='2379'");
    expect(s).toContain("default_lease_ttl='60'");
    expect(s).toContain("default_keepalive_interval='20'");
    expect(script('master')).toContain("role='master'");
  });

  it('never passes the join token or the auth token in argv', () => {
    const s = script('master');
    expect(s).toMatch(/--data-binary @-/);
    expect(s).toMatch(/-H "@\$auth_header"/);
    expect(s).not.toMatch(/curl[^\n]*\$join_token/);
  });
});

describe('the discovery etcd', () => {
  const plan = bootPlan('discovery', specFor('ubuntu', { 'etcd-version': 'v3.6.6' }));
  const unit = plan.units.find((u) => u.name === 'discovery-etcd.service')!.content;

  it('serves TLS on the discovery IP, peers on loopback only, data in /var/lib/etcd', () => {
    expect(unit).toContain('--listen-client-urls=https://10.240.0.10:2379');
    expect(unit).toContain('--advertise-client-urls=https://10.240.0.10:2379');
    expect(unit).toContain('--listen-peer-urls=http://127.0.0.1:2380');
    expect(unit).toContain('--cert-file=/etc/corekube/pki/discovery/server.crt');
    expect(unit).toContain('--key-file=/etc/corekube/pki/discovery/server.key');
    expect(unit).toContain('--data-dir=/var/lib/etcd');
    expect(unit).toMatch(/^Type=notify$/m);
  });

  it('starts only once the overlord has installed its certificate, retrying a half-written set', () => {
    const path = plan.units.find((u) => u.name === 'discovery-etcd.path')!.content;
    expect(bootUnits(plan).map((u) => u.name)).not.toContain('discovery-etcd.service');
    expect(bootUnits(plan).map((u) => u.name)).toContain('discovery-etcd.path');
    expect(unit).not.toContain('[Install]');
    expect(path).toMatch(/^PathExists=\/etc\/corekube\/pki\/discovery\/server\.key$/m);
    expect(unit).toMatch(/^ExecStartPre=\/usr\/bin\/test -s \/etc\/corekube\/pki\/discovery\/ca\.crt -a -s \S+server\.crt -a -s \S+server\.key$/m);
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toMatch(/^StartLimitIntervalSec=0$/m);
  });
});
