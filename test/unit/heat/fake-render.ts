import { PLACEHOLDERS } from '../../../cloud-config/placeholders.ts';
import type { ClusterSpec } from '../../../spec/cluster-spec.ts';
export const renderUserData = (role: string, spec: ClusterSpec) => `#cloud-config\n# ${role} ${spec.name}\nwrite_files:\n- path: /etc/x\n  content: |\n    ${Object.values(PLACEHOLDERS).filter(t => role === 'overlord' ? !t.includes('SSH_KEY') && !t.includes('DISCOVERY_CA') : !t.includes('COUNT')).join('\n    ')}\n`;
