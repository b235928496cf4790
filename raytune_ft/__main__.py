from raytune_ft.cli import main

main()
