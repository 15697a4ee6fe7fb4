/**
 * How each project's programs are built from source: its Go module at exactly the spec's version (or, for the
 * pause container's program, its C source inside the Kubernetes module), with the version stamped the way the
 * project's own release build stamps it. Pure data; build.ts runs it. Nothing upstream is copied into this
 * repository: release/gomod/<project>/ holds only a go.mod and go.sum of our own that require the upstream
 * module (the go.sum pins every module's hash for the versions corekube pins).
 *
 * Where a build departs from the upstream release build, the recipe says why in `notes` (printed by
 * `corekube mirror build --from-source` and listed in release/README.md).
 */
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { CNI_PLUGINS, type Project } from './catalog.ts';

export interface VersionProbe {
  /** argv after the program's path */
  readonly args: readonly string[];
  /** a substring its stdout+stderr must contain */
  readonly expect: string;
}

export interface GoProgram {
  /** Go package path of the main package */
  readonly pkg: string;
  /** the program's name (the built file) */
  readonly program: string;
  readonly probe: VersionProbe;
}

/**
 * A module the Go module proxy does not serve, assembled at build time (in the build's work directory, never
 * in the repository) from a directory of another, served module, with the requirements it needs.
 */
export interface AssembledModule {
  /** the module path it stands for (replaced by `./<dir>` in the build module's go.mod) */
  readonly module: string;
  readonly dir: string;
  readonly from: { readonly module: string; readonly version: string; readonly subdir: string };
  readonly require: Readonly<Record<string, string>>;
  readonly why: string;
}

export interface GoRecipe {
  readonly kind: 'go';
  readonly project: Project;
  /** the upstream module required at `version` */
  readonly module: string;
  readonly version: string;
  /** more modules of the same project required at the same version (etcdctl, etcdutl) */
  readonly alsoRequire: readonly string[];
  /** `module => module version` replacements (Kubernetes' staging modules at their published v0.x) */
  readonly replace: Readonly<Record<string, string>>;
  readonly assembled: readonly AssembledModule[];
  readonly programs: readonly GoProgram[];
  readonly cgo: boolean;
  readonly tags: readonly string[];
  /** `-X` stamps, `importpath.name` → value */
  readonly stamps: Readonly<Record<string, string>>;
  /** link statically (cgo programs: `-extldflags -static`) */
  readonly static: boolean;
  readonly notes: readonly string[];
}

export interface CRecipe {
  readonly kind: 'c';
  readonly project: Project;
  /** the module whose zip holds the source */
  readonly module: string;
  readonly moduleVersion: string;
  readonly source: string;
  readonly program: string;
  readonly cflags: readonly string[];
  readonly probe: VersionProbe;
  readonly notes: readonly string[];
}

export type Recipe = GoRecipe | CRecipe;

/**
 * Kubernetes' staging modules: k8s.io/kubernetes's go.mod replaces each with `./staging/src/…`, which a module
 * that requires k8s.io/kubernetes must replace with the published `v0.<minor>.<patch>` (kubernetes#79384).
 * The list is the replace block of k8s.io/kubernetes's go.mod at the pinned tag.
 */
export const KUBERNETES_STAGING = [
  'api', 'apiextensions-apiserver', 'apimachinery', 'apiserver', 'cli-runtime', 'client-go', 'cloud-provider',
  'cluster-bootstrap', 'code-generator', 'component-base', 'component-helpers', 'controller-manager', 'cri-api',
  'cri-client', 'cri-streaming', 'csi-translation-lib', 'dynamic-resource-allocation', 'endpointslice',
  'externaljwt', 'kms', 'kube-aggregator', 'kube-controller-manager', 'kube-proxy', 'kube-scheduler', 'kubectl',
  'kubelet', 'metrics', 'mount-utils', 'pod-security-admission', 'sample-apiserver', 'sample-cli-plugin',
  'sample-controller', 'streaming',
] as const;

export const KUBERNETES_PROGRAMS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'kubelet', 'kube-proxy'] as const;

/**
 * Tools corekube's own checks run, built the same way but no part of a cluster's release: Ignition's validator
 * (CI validates every role's Flatcar config with it).
 */
export const TOOLS = Object.freeze({ ignition: Object.freeze({ module: 'github.com/coreos/ignition/v2', version: 'v2.24.0' }) });

export function toolRecipes(): readonly GoRecipe[] {
  const { module, version } = TOOLS.ignition;
  return Object.freeze([
    {
      kind: 'go', project: 'ignition', module, version, alsoRequire: [], replace: {}, assembled: [],
      programs: [{ pkg: `${module}/validate`, program: 'ignition-validate', probe: { args: ['--version'], expect: version } }],
      cgo: false, tags: [], stamps: { [`${module}/internal/version.Raw`]: version }, static: true, notes: [],
    },
  ]);
}

/** What a from-source build stamps where upstream stamps a git commit: the module it was built from. */
export const builtFrom = (module: string, version: string) => `${module}@${version}`;

/** Every recipe for the spec's versions, in build order (the longest first: Kubernetes). Pure. */
export function recipes(versions: ClusterSpec['versions'], buildDate: string): readonly Recipe[] {
  const v = versions;
  const k8sMinor = /^v(\d+)\.(\d+)\./.exec(v.kubernetes);
  const k8sStaging = `v0.${v.kubernetes.replace(/^v1\./, '')}`;
  const kubeStamp: Record<string, string> = {};
  const kubeValues = {
    gitVersion: v.kubernetes,
    gitMajor: k8sMinor?.[1] ?? '',
    gitMinor: k8sMinor?.[2] ?? '',
    // built from the module zip, not a git checkout: kubernetes' hack/lib/version.sh calls that "archive"
    gitTreeState: 'archive',
    gitCommit: builtFrom('k8s.io/kubernetes', v.kubernetes),
    buildDate,
  };
  for (const [k, val] of Object.entries(kubeValues)) {
    kubeStamp[`k8s.io/component-base/version.${k}`] = val;
    kubeStamp[`k8s.io/client-go/pkg/version.${k}`] = val;
  }
  const out: Recipe[] = [
    {
      kind: 'go', project: 'kubernetes', module: 'k8s.io/kubernetes', version: v.kubernetes, alsoRequire: [],
      replace: Object.fromEntries(KUBERNETES_STAGING.map((m) => [`k8s.io/${m}`, `k8s.io/${m} ${k8sStaging}`])),
      assembled: [],
      programs: KUBERNETES_PROGRAMS.map((p) => ({
        pkg: `k8s.io/kubernetes/cmd/${p}`, program: p,
        probe: p === 'kubectl' ? { args: ['version', '--client'], expect: `Client Version: ${v.kubernetes}` } : { args: ['--version'], expect: `Kubernetes ${v.kubernetes}` },
      })),
      cgo: false, tags: [], stamps: kubeStamp, static: true,
      notes: ['kubelet is built without cgo, as every other Kubernetes program (upstream 1.36 links kubelet with cgo; 1.38 drops it too)'],
    },
    {
      kind: 'go', project: 'etcd', module: 'go.etcd.io/etcd/server/v3', version: v.etcd,
      alsoRequire: ['go.etcd.io/etcd/etcdctl/v3', 'go.etcd.io/etcd/etcdutl/v3'], replace: {}, assembled: [],
      programs: [
        { pkg: 'go.etcd.io/etcd/server/v3', program: 'etcd', probe: { args: ['--version'], expect: `etcd Version: ${v.etcd.slice(1)}` } },
        { pkg: 'go.etcd.io/etcd/etcdctl/v3', program: 'etcdctl', probe: { args: ['version'], expect: `etcdctl version: ${v.etcd.slice(1)}` } },
        { pkg: 'go.etcd.io/etcd/etcdutl/v3', program: 'etcdutl', probe: { args: ['version'], expect: `etcdutl version: ${v.etcd.slice(1)}` } },
      ],
      cgo: false, tags: [], stamps: { 'go.etcd.io/etcd/api/v3/version.GitSHA': builtFrom('go.etcd.io/etcd', v.etcd) }, static: true, notes: [],
    },
    {
      kind: 'go', project: 'containerd', module: 'github.com/containerd/containerd/v2', version: v.containerd, alsoRequire: [], replace: {}, assembled: [],
      programs: [
        { pkg: 'github.com/containerd/containerd/v2/cmd/containerd', program: 'containerd', probe: { args: ['--version'], expect: v.containerd } },
        { pkg: 'github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2', program: 'containerd-shim-runc-v2', probe: { args: ['-v'], expect: v.containerd } },
        { pkg: 'github.com/containerd/containerd/v2/cmd/ctr', program: 'ctr', probe: { args: ['--version'], expect: v.containerd } },
      ],
      cgo: false, tags: ['urfave_cli_no_docs'],
      stamps: {
        'github.com/containerd/containerd/v2/version.Version': v.containerd,
        'github.com/containerd/containerd/v2/version.Revision': builtFrom('github.com/containerd/containerd/v2', v.containerd),
        'github.com/containerd/containerd/v2/version.Package': 'github.com/containerd/containerd/v2',
      },
      static: true,
      notes: ['containerd is linked statically without cgo (upstream\'s "static" tarball; the btrfs snapshotter, which needs cgo, is left out)'],
    },
    {
      kind: 'go', project: 'runc', module: 'github.com/opencontainers/runc', version: v.runc, alsoRequire: [], replace: {}, assembled: [],
      programs: [{ pkg: 'github.com/opencontainers/runc', program: 'runc', probe: { args: ['--version'], expect: `runc version ${v.runc.slice(1)}` } }],
      cgo: true, tags: ['seccomp', 'urfave_cli_no_docs', 'netgo', 'osusergo'],
      stamps: { 'main.gitCommit': builtFrom('github.com/opencontainers/runc', v.runc) }, static: true,
      notes: ['runc links Debian\'s libseccomp statically (upstream links libseccomp 2.6.0 it builds itself)'],
    },
    {
      kind: 'go', project: 'flannel', module: 'github.com/flannel-io/flannel', version: v.flannel, alsoRequire: [], replace: {},
      assembled: [{
        module: 'github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc',
        dir: 'tencentcloud-vpc',
        from: { module: 'github.com/tencentcloud/tencentcloud-sdk-go', version: 'v1.0.162', subdir: 'tencentcloud/vpc' },
        require: { 'github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common': 'v1.3.190' },
        why: 'the Go module proxy does not serve github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc (flannel\'s Tencent Cloud VPC backend, never used by corekube): its package comes from the monolithic tencentcloud-sdk-go v1.0.162',
      }],
      programs: [{ pkg: 'github.com/flannel-io/flannel', program: 'flanneld', probe: { args: ['--version'], expect: v.flannel } }],
      // cgo on amd64 for the UDP backend, as upstream builds it
      cgo: true, tags: ['netgo', 'osusergo'], stamps: { 'github.com/flannel-io/flannel/pkg/version.Version': v.flannel }, static: true, notes: [],
    },
    {
      kind: 'go', project: 'cni-plugins', module: 'github.com/containernetworking/plugins', version: v.cniPlugins, alsoRequire: [], replace: {}, assembled: [],
      programs: (Object.entries(CNI_PLUGINS) as [string, readonly string[]][]).flatMap(([group, names]) =>
        names.map((p) => ({ pkg: `github.com/containernetworking/plugins/plugins/${group}/${p}`, program: p, probe: { args: [], expect: `CNI ${p} plugin ${v.cniPlugins}` } })),
      ),
      cgo: false, tags: [], stamps: { 'github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion': v.cniPlugins }, static: true, notes: [],
    },
    {
      kind: 'go', project: 'coredns', module: 'github.com/coredns/coredns', version: v.coredns, alsoRequire: [], replace: {}, assembled: [],
      programs: [{ pkg: 'github.com/coredns/coredns', program: 'coredns', probe: { args: ['-version'], expect: `CoreDNS-${v.coredns.slice(1)}` } }],
      cgo: false, tags: ['grpcnotrace'], stamps: { 'github.com/coredns/coredns/coremain.GitCommit': builtFrom('github.com/coredns/coredns', v.coredns) }, static: true, notes: [],
    },
    {
      kind: 'c', project: 'pause', module: 'k8s.io/kubernetes', moduleVersion: v.kubernetes, source: 'build/pause/linux/pause.c', program: 'pause',
      cflags: ['-Os', '-Wall', '-Werror', '-static', `-DVERSION=v${v.pause}-${builtFrom('k8s.io/kubernetes', v.kubernetes)}`],
      probe: { args: ['-v'], expect: `v${v.pause}` },
      notes: [`the pause program comes from the pause.c of k8s.io/kubernetes ${v.kubernetes}, tagged ${v.pause}`],
    },
  ];
  return Object.freeze(out);
}
