import type { Command } from './command.ts';
import { cloudConfigRenderCommand } from './cloud-config.ts';
import { heatGenerateCommand, heatNodeCommand } from './heat.ts';
import { overlordCommand } from './overlord.ts';
import { statusCommand } from './status.ts';
import { unitsRenderCommand } from './units.ts';
import { kubeconfigCommand } from './kubeconfig.ts';
import { downCommand, stackStatusCommand, upCommand, upgradeCommand } from './cloud.ts';
import { demoCommand } from './demo.ts';
import { mirrorBuildCommand } from './mirror.ts';
import { nodeRemoveCommand } from './node.ts';
import { pkiRotateCaCommand } from './pki.ts';

/** Every command, in the order `corekube --help` lists them. Rooms register theirs here. */
export const commands: readonly Command[] = [
  heatGenerateCommand,
  heatNodeCommand,
  upCommand(),
  downCommand(),
  stackStatusCommand(),
  upgradeCommand(),
  overlordCommand,
  statusCommand,
  nodeRemoveCommand,
  unitsRenderCommand,
  kubeconfigCommand,
  pkiRotateCaCommand,
  cloudConfigRenderCommand,
  mirrorBuildCommand,
  demoCommand,
];
