import { mergeConfig } from 'vitest/config';
import { projectTestConfig } from '../../tools/vitest.shared.js';

export default mergeConfig(projectTestConfig(import.meta.url), {});
