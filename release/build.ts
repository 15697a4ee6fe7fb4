/**
 * Builds every program of the release from source (recipes.ts) into a cache outside the work tree, by project
 * and version: `$COREKUBE_CACHE/release/build/<project>-<version>-<key>/` (default COREKUBE_CACHE
 * /var/cache/corekube), where `<key>` hashes the recipe, the Go toolchain and the build module. A built project
 * is never built again; Go's own module and build caches (GOMODCACHE, GOCACHE) are kept too, so even a changed
 * recipe rebuilds in seconds, not minutes. Each build is checked: every program must report its pinned version.
 *
 * A build runs in `$COREKUBE_CACHE/release/work/<project>-<version>/`, from the build module of this repository
 * (release/gomod/<project>/: go.mod and go.sum of our own requiring the upstream module), or, for a version
 * corekube does not pin, from a go.mod generated from the recipe (its module hashes then come from the Go
 * checksum database through the module proxy). The result is moved into place whole, so an interrupted build
 * leaves nothing a later run would take for done.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CorekubeError } from '../core/errors.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { Project } from './catalog.ts';
import { recipes, toolRecipes, type CRecipe, type GoRecipe, type Recipe, type VersionProbe } from './recipes.ts';

const run = promisify(execFile);
const GOMOD_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'gomod');
/** bump when the way a build is made changes in a way the recipe does not show */
const BUILDER_REVISION = 1;

export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.COREKUBE_CACHE && env.COREKUBE_CACHE !== '' ? env.COREKUBE_CACHE : '/var/cache/corekube';
}

export interface BuiltProject {
  readonly project: Project;
  readonly version: string;
  /** the directory holding `bin/<program>` and `build.json` */
  readonly dir: string;
  /** absolute path of each program */
  readonly programs: ReadonlyMap<string, string>;
  /** how long its build took when it was built (seconds), and whether this run found it built */
  readonly seconds: number;
  readonly cached: boolean;
  readonly bytes: number;
  readonly notes: readonly string[];
}

export type BuildEvent =
  | { readonly kind: 'start'; readonly project: Project; readonly version: string; readonly index: number; readonly total: number; readonly programs: readonly string[] }
  | { readonly kind: 'step'; readonly project: Project; readonly message: string }
  | { readonly kind: 'done'; readonly built: BuiltProject };

export interface BuildOptions {
  readonly onEvent?: (event: BuildEvent) => void;
  /** only these projects (default: all) */
  readonly projects?: readonly Project[];
  readonly env?: NodeJS.ProcessEnv;
  /** copy the work dir's go.mod and go.sum back into release/gomod/<project>/ (maintainers, after a pin changes) */
  readonly updateBuildModules?: boolean;
}

/** Why nothing can be built here, or undefined. */
export async function buildToolsMissing(needCgo: boolean): Promise<string | undefined> {
  const tools: [string, string[], string][] = [['go', ['version'], 'Go 1.26 or newer (https://go.dev/dl)']];
  if (needCgo) tools.push(['gcc', ['--version'], 'Debian packages gcc and libc6-dev'], ['pkg-config', ['--version'], 'Debian package pkg-config']);
  for (const [bin, args, what] of tools) {
    try {
      await run(bin, args);
    } catch {
      return `${bin} is not installed (${what})`;
    }
  }
  if (needCgo && !existsSync('/usr/lib/x86_64-linux-gnu/libseccomp.a')) return 'libseccomp.a is missing (Debian package libseccomp-dev), which runc links statically';
  return undefined;
}

/**
 * Every program of `versions`, built (or found built) in the cache. Projects are built one after the other
 * (a Go build already uses every core).
 */
export async function ensureBuilt(versions: ClusterSpec['versions'], options: BuildOptions = {}): Promise<Map<Project, BuiltProject>> {
  const env = options.env ?? process.env;
  const goVersion = (await run('go', ['env', 'GOVERSION'], { env: goEnv(env, false) }).catch(() => ({ stdout: '' }))).stdout.trim();
  if (goVersion === '') throw new CorekubeError('E_IO', 'go is not installed, so nothing can be built from source', { hint: 'install Go 1.26 or newer, or build the mirror from upstream downloads (without --from-source)' });
  const buildDate = await kubernetesBuildDate(versions.kubernetes, env);
  const all = recipes(versions, buildDate).filter((r) => !options.projects || options.projects.includes(r.project));
  const missing = await buildToolsMissing(all.some((r) => r.kind === 'c' || (r.kind === 'go' && r.cgo)));
  if (missing) throw new CorekubeError('E_IO', `cannot build from source: ${missing}`, { hint: 'run bash scripts/setup (as root on Debian 12), which installs the build tools' });
  const out = new Map<Project, BuiltProject>();
  let index = 0;
  for (const recipe of all) {
    index++;
    const built = await buildProject(recipe, { goVersion, env, index, total: all.length, emit: options.onEvent ?? (() => undefined), update: options.updateBuildModules ?? false });
    out.set(recipe.project, built);
  }
  return out;
}

/** The tools of recipes.ts toolRecipes (Ignition's validator), built or found in the cache like the release. */
export async function ensureTools(options: Omit<BuildOptions, 'projects'> = {}): Promise<Map<Project, BuiltProject>> {
  const env = options.env ?? process.env;
  const goVersion = (await run('go', ['env', 'GOVERSION'], { env: goEnv(env, false) }).catch(() => ({ stdout: '' }))).stdout.trim();
  if (goVersion === '') throw new CorekubeError('E_IO', 'go is not installed, so the tools cannot be built', { hint: 'install Go 1.26 or newer' });
  const out = new Map<Project, BuiltProject>();
  const all = toolRecipes();
  let index = 0;
  for (const recipe of all) {
    out.set(recipe.project, await buildProject(recipe, { goVersion, env, index: ++index, total: all.length, emit: options.onEvent ?? (() => undefined), update: options.updateBuildModules ?? false }));
  }
  return out;
}

interface BuildContext {
  readonly goVersion: string;
  readonly env: NodeJS.ProcessEnv;
  readonly index: number;
  readonly total: number;
  readonly emit: (e: BuildEvent) => void;
  readonly update: boolean;
}

async function buildProject(recipe: Recipe, ctx: BuildContext): Promise<BuiltProject> {
  const version = recipe.kind === 'go' ? recipe.version : recipe.moduleVersion;
  const programs = recipe.kind === 'go' ? recipe.programs.map((p) => p.program) : [recipe.program];
  const label = recipe.kind === 'go' ? recipe.version : `${recipeVersionOf(recipe)} (from k8s.io/kubernetes ${recipe.moduleVersion})`;
  const moduleFiles = await buildModuleFiles(recipe);
  const key = createHash('sha256')
    .update(JSON.stringify({ recipe, go: ctx.goVersion, builder: BUILDER_REVISION, module: moduleFiles?.pinned ? moduleFiles : null }))
    .digest('hex')
    .slice(0, 12);
  const root = cacheRoot(ctx.env);
  const finalDir = path.join(root, 'release', 'build', `${recipe.project}-${recipeVersionOf(recipe)}-${key}`);
  const known = await readBuilt(finalDir, recipe, programs);
  if (known) {
    ctx.emit({ kind: 'done', built: known });
    return known;
  }

  ctx.emit({ kind: 'start', project: recipe.project, version: label, index: ctx.index, total: ctx.total, programs });
  const started = Date.now();
  const tmpDir = `${finalDir}.tmp-${process.pid}`;
  await rm(tmpDir, { recursive: true, force: true });
  await mkdir(path.join(tmpDir, 'bin'), { recursive: true });
  try {
    if (recipe.kind === 'go') await buildGo(recipe, moduleFiles, path.join(tmpDir, 'bin'), ctx);
    else await buildC(recipe, path.join(tmpDir, 'bin'), ctx);
    const paths = new Map(programs.map((p) => [p, path.join(tmpDir, 'bin', p)]));
    await checkVersions(recipe, paths);
    const seconds = Math.round((Date.now() - started) / 100) / 10;
    let bytes = 0;
    for (const p of paths.values()) bytes += (await stat(p)).size;
    await writeFile(path.join(tmpDir, 'build.json'), `${JSON.stringify({ project: recipe.project, version: recipeVersionOf(recipe), go: ctx.goVersion, seconds, bytes, builtAt: new Date().toISOString() }, null, 2)}\n`);
    await rm(finalDir, { recursive: true, force: true });
    await rename(tmpDir, finalDir);
    await pruneOlderBuilds(finalDir);
  } catch (err) {
    await rm(tmpDir, { recursive: true, force: true });
    throw err;
  }
  const built = await readBuilt(finalDir, recipe, programs);
  if (!built) throw new CorekubeError('E_INTERNAL', `the build of ${recipe.project} left no build.json in ${finalDir}`);
  const fresh = { ...built, cached: false };
  ctx.emit({ kind: 'done', built: fresh });
  return fresh;
}

/** Removes other builds of the same project and version (an older recipe's): the cache keeps one a version. */
async function pruneOlderBuilds(finalDir: string): Promise<void> {
  const parent = path.dirname(finalDir);
  const stem = path.basename(finalDir).replace(/-[0-9a-f]{12}$/, '-');
  for (const name of await readdir(parent)) {
    const other = path.join(parent, name);
    if (other !== finalDir && name.startsWith(stem) && /^[0-9a-f]{12}$/.test(name.slice(stem.length))) await rm(other, { recursive: true, force: true });
  }
}

/** The version a recipe builds (the pause recipe builds the pause tag from the Kubernetes module). */
export function recipeVersionOf(recipe: Recipe): string {
  if (recipe.kind === 'go') return recipe.version;
  const m = /-DVERSION=(v[^-\s]+)/.exec(recipe.cflags.join(' '));
  return m ? m[1]!.slice(1) : recipe.moduleVersion;
}

async function readBuilt(dir: string, recipe: Recipe, programs: readonly string[]): Promise<BuiltProject | undefined> {
  const meta = await readFile(path.join(dir, 'build.json'), 'utf8').then((t) => JSON.parse(t) as { seconds: number; bytes: number }).catch(() => undefined);
  if (!meta) return undefined;
  const paths = new Map(programs.map((p) => [p, path.join(dir, 'bin', p)]));
  for (const p of paths.values()) if (!existsSync(p)) return undefined;
  return Object.freeze({ project: recipe.project, version: recipeVersionOf(recipe), dir, programs: paths, seconds: meta.seconds, cached: true, bytes: meta.bytes, notes: recipe.notes });
}

interface ModuleFiles {
  readonly goMod: string;
  readonly goSum: string;
  /** true when they are this repository's build module for exactly this version */
  readonly pinned: boolean;
}

/** This repository's build module when it pins the recipe's version, else a go.mod made from the recipe. */
async function buildModuleFiles(recipe: Recipe): Promise<ModuleFiles | undefined> {
  if (recipe.kind !== 'go') return undefined;
  const dir = path.join(GOMOD_DIR, recipe.project);
  const goMod = await readFile(path.join(dir, 'go.mod'), 'utf8').catch(() => '');
  const goSum = await readFile(path.join(dir, 'go.sum'), 'utf8').catch(() => '');
  const requires = new RegExp(`^\\s*(require\\s+)?${escapeRegExp(recipe.module)}\\s+${escapeRegExp(recipe.version)}\\s*$`, 'm');
  if (goMod !== '' && requires.test(goMod)) return { goMod, goSum, pinned: true };
  return { goMod: generatedGoMod(recipe), goSum, pinned: false };
}

/** The go.mod of a build module for `recipe`: require the module (and its siblings), replace what must be. */
export function generatedGoMod(recipe: GoRecipe): string {
  const lines = [
    `// corekube's build module for ${recipe.project}: it requires ${recipe.module} at the pinned version and builds its programs`,
    `// (release/recipes.ts, release/build.ts). No upstream source lives in this repository.`,
    `module corekube.build/${recipe.project}`,
    '',
    'go 1.26.0',
    '',
    'require (',
    ...[recipe.module, ...recipe.alsoRequire].map((m) => `\t${m} ${recipe.version}`),
    ')',
  ];
  const replace = [
    ...Object.entries(recipe.replace).map(([from, to]) => `\t${from} => ${to}`),
    ...recipe.assembled.map((a) => `\t${a.module} => ./${a.dir}`),
  ];
  if (replace.length > 0) lines.push('', 'replace (', ...replace, ')');
  return `${lines.join('\n')}\n`;
}

async function buildGo(recipe: GoRecipe, files: ModuleFiles | undefined, binDir: string, ctx: BuildContext): Promise<void> {
  const work = path.join(cacheRoot(ctx.env), 'release', 'work', `${recipe.project}-${recipe.version}`);
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  await writeFile(path.join(work, 'go.mod'), files!.goMod);
  await writeFile(path.join(work, 'go.sum'), files!.goSum);
  if (!files!.pinned) ctx.emit({ kind: 'step', project: recipe.project, message: `${recipe.module} ${recipe.version} is not the version corekube pins: its module hashes come from the Go checksum database` });
  for (const a of recipe.assembled) {
    ctx.emit({ kind: 'step', project: recipe.project, message: `assembling ${a.module} from ${a.from.module} ${a.from.version}: ${a.why}` });
    const { stdout } = await go(['mod', 'download', '-json', `${a.from.module}@${a.from.version}`], work, ctx.env, false);
    const src = (JSON.parse(stdout) as { Dir?: string }).Dir;
    if (!src) throw new CorekubeError('E_IO', `go mod download found no directory for ${a.from.module}@${a.from.version}`, { hint: 'check that the Go module proxy is reachable (go env GOPROXY)' });
    const dest = path.join(work, a.dir);
    await cp(path.join(src, a.from.subdir), dest, { recursive: true });
    await makeWritable(dest);
    const req = Object.entries(a.require).map(([m, v]) => `\t${m} ${v}`);
    await writeFile(path.join(dest, 'go.mod'), `module ${a.module}\n\ngo 1.14\n\nrequire (\n${req.join('\n')}\n)\n`);
  }
  const ldflags = ['-s', '-w', '-buildid=', ...Object.entries(recipe.stamps).map(([k, v]) => `-X=${k}=${v}`)];
  if (recipe.cgo && recipe.static) ldflags.push('-extldflags=-static');
  let n = 0;
  for (const p of recipe.programs) {
    n++;
    const t = Date.now();
    const args = ['build', '-mod=mod', '-trimpath', '-buildvcs=false', ...(recipe.tags.length > 0 ? ['-tags', recipe.tags.join(',')] : []), '-ldflags', ldflags.join(' '), '-o', path.join(binDir, p.program), p.pkg];
    await go(args, work, ctx.env, recipe.cgo);
    ctx.emit({ kind: 'step', project: recipe.project, message: `${p.program} built (${n}/${recipe.programs.length}, ${((Date.now() - t) / 1000).toFixed(0)} s)` });
  }
  if (ctx.update) {
    const dest = path.join(GOMOD_DIR, recipe.project);
    await mkdir(dest, { recursive: true });
    await writeFile(path.join(dest, 'go.mod'), await readFile(path.join(work, 'go.mod'), 'utf8'));
    await writeFile(path.join(dest, 'go.sum'), await readFile(path.join(work, 'go.sum'), 'utf8'));
    ctx.emit({ kind: 'step', project: recipe.project, message: `wrote ${path.relative(process.cwd(), dest)}/go.mod and go.sum` });
  }
}

async function buildC(recipe: CRecipe, binDir: string, ctx: BuildContext): Promise<void> {
  const work = path.join(cacheRoot(ctx.env), 'release', 'work', `${recipe.project}-${recipe.moduleVersion}`);
  await mkdir(work, { recursive: true });
  const { stdout } = await go(['mod', 'download', '-json', `${recipe.module}@${recipe.moduleVersion}`], work, ctx.env, false);
  const dir = (JSON.parse(stdout) as { Dir?: string }).Dir;
  if (!dir) throw new CorekubeError('E_IO', `go mod download found no directory for ${recipe.module}@${recipe.moduleVersion}`);
  const tag = recipeVersionOf(recipe);
  const makefile = await readFile(path.join(dir, path.dirname(path.dirname(recipe.source)), 'Makefile'), 'utf8').catch(() => '');
  const upstreamTag = /^TAG\s*\?=\s*(\S+)/m.exec(makefile)?.[1];
  if (upstreamTag !== undefined && upstreamTag !== tag) {
    throw new CorekubeError('E_SPEC_INVALID', `pause ${tag} is not the pause of Kubernetes ${recipe.moduleVersion}, whose build/pause/Makefile tags ${upstreamTag}`, { hint: `use --pause-version ${upstreamTag}` });
  }
  const out = path.join(binDir, recipe.program);
  await spawnChecked('gcc', [...recipe.cflags, '-o', out, path.join(dir, recipe.source)], work, ctx.env);
  await spawnChecked('strip', [out], work, ctx.env);
}

/** Every program reports the version it was built for; else the build is refused (nothing is cached). */
async function checkVersions(recipe: Recipe, paths: ReadonlyMap<string, string>): Promise<void> {
  const probes: [string, VersionProbe][] = recipe.kind === 'go' ? recipe.programs.map((p) => [p.program, p.probe]) : [[recipe.program, recipe.probe]];
  for (const [program, probe] of probes) {
    const file = paths.get(program)!;
    const said = await new Promise<string>((resolve) => {
      execFile(file, [...probe.args], { timeout: 20_000, env: { PATH: '/usr/bin:/bin' } }, (_err, stdout, stderr) => resolve(`${stdout}${stderr}`));
    });
    if (!said.includes(probe.expect)) {
      throw new CorekubeError('E_INTERNAL', `${program} built from ${recipe.project} does not report ${JSON.stringify(probe.expect)} (${[program, ...probe.args].join(' ')} said: ${JSON.stringify(said.slice(0, 300))})`, {
        hint: 'the recipe\'s version stamp (release/recipes.ts) does not match how this version reports itself',
      });
    }
  }
}

/** The Kubernetes module's publication time (its .info), stamped as buildDate so a build is reproducible. */
async function kubernetesBuildDate(version: string, env: NodeJS.ProcessEnv): Promise<string> {
  const { stdout } = await go(['mod', 'download', '-json', `k8s.io/kubernetes@${version}`], cacheRoot(env), env, false).catch((err: unknown) => {
    throw new CorekubeError('E_IO', `cannot download k8s.io/kubernetes@${version} from the Go module proxy: ${(err as Error).message.split('\n').slice(-3).join(' ')}`, {
      hint: 'check the version exists (go list -m -versions k8s.io/kubernetes) and that the module proxy is reachable (go env GOPROXY)',
    });
  });
  const info = (JSON.parse(stdout) as { Info?: string }).Info;
  const time = info ? (JSON.parse(await readFile(info, 'utf8')) as { Time?: string }).Time : undefined;
  return (time ?? '1970-01-01T00:00:00Z').replace(/\.\d+Z$/, 'Z');
}

function goEnv(env: NodeJS.ProcessEnv, cgo: boolean): NodeJS.ProcessEnv {
  return {
    ...env,
    CGO_ENABLED: cgo ? '1' : '0',
    GOOS: 'linux',
    GOARCH: 'amd64',
    GOTOOLCHAIN: 'local',
    GOWORK: 'off',
    GOFLAGS: '',
  };
}

async function go(args: string[], cwd: string, env: NodeJS.ProcessEnv, cgo: boolean): Promise<{ stdout: string }> {
  await mkdir(cwd, { recursive: true });
  return spawnChecked('go', args, cwd, goEnv(env, cgo));
}

/** Runs a build command; its output is kept for the error, never streamed (a build prints thousands of lines). */
function spawnChecked(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<{ stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
      if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) return resolve({ stdout });
      const tail = stderr.trim().split('\n').slice(-15).join('\n');
      reject(new CorekubeError('E_COMMAND_FAILED', `${cmd} ${args.slice(0, 2).join(' ')} … failed (exit ${code}) in ${cwd}:\n${tail}`, {
        hint: 'the lines above are the end of its output; a module the proxy refuses (403) cannot be built here',
      }));
    });
  });
}

async function makeWritable(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await makeWritable(p);
    else await chmod(p, 0o644);
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
