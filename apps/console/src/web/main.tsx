// Entry of the console's web app.
import { createRoot } from 'react-dom/client';
import { takeTokenFromUrl } from './api.js';
import { App } from './App.js';

takeTokenFromUrl();
createRoot(document.getElementById('root')!).render(<App />);
