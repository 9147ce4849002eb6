from trickscope_cli.main import main

raise SystemExit(main())
