"""What the hub's server-rendered pages share (console and portal): languages and message catalogues,
signed sessions, security headers, CSRF and SVG charts."""
